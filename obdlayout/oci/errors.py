"""The one error type of the oci package: a fault in a named file of an image layout, or in an image it holds."""


class LayoutError(Exception):
    """`where` names the file (or the image and manifest) at fault, `problem` says what is wrong with it."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem
