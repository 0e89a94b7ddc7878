"""The error of the read side: a path or an image that cannot be shown as asked."""


class InspectError(Exception):
    """`where` names the image (and path) at fault, `problem` says what is wrong."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem
