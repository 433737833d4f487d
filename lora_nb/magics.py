"""``%lora`` and ``%%lora``: parse the line, look up variables, delegate to core, show the result."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .cmd import dispatch, help_text
from .errors import LoraNBError


@magics_class
class LoraMagics(Magics):
    """The ``%lora`` magics; ``%lora?`` lists the verbs."""

    @line_cell_magic
    def lora(self, line: str, cell: str | None = None):
        try:
            return dispatch(self.shell, line, cell)
        except LoraNBError as exc:
            raise UsageError(str(exc)) from None

    lora.__doc__ = help_text()
