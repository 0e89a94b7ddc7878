"""The root of every error obdlayout reports: `where: problem`, one line a user can act on.

Each package derives its own errors from it (LayoutError, FormatError, Ext4Error, LayerError, …), so a
caller that only wants to report and stop catches `ObdlayoutError`, and a caller that must tell faults
apart (the source layout, a blob, the tar stream, the file system) catches the one it means.
"""


class ObdlayoutError(Exception):
    """`where` names the file, image, layer or entry at fault ("" when the raiser cannot know it and its
    caller adds it); `problem` says what is wrong with it."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross process boundaries (conversion workers); subclasses' constructors differ.
        return (_rebuild, (type(self), self.where, self.problem))


def _rebuild(cls: type[ObdlayoutError], where: str, problem: str) -> ObdlayoutError:
    error = cls.__new__(cls)
    ObdlayoutError.__init__(error, where, problem)
    return error
