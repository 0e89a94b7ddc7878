"""The one error type of the formats package: a fault in a named blob."""


class FormatError(Exception):
    """A blob breaks a rule of its format; `where` names the file (and member) at fault."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem
