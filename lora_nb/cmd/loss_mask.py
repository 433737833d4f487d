"""``data``: the training data's loss mask — tokens marked trained or masked — and the checks chat data fails."""

from __future__ import annotations

from ..core.training.data.loss_mask import loss_mask
from ..core.training.settings import TrainSettings
from ..frontend import pick
from .router import UI, Text, arg, verb


@verb(
    "data", "the loss mask: the first rows token by token, trained or masked, and checks (rows with nothing to "
            "learn, the end-of-turn token after each answer, system/user tokens masked, answers cut by truncation)",
    arg("--data", dest="data", required=True, help="variable with the training data"),
    arg("--tokenizer", dest="tokenizer", required=True, help="variable with the tokenizer training will use"),
    arg("--n", type=int, default=3, help="rows to show token by token (default: 3)"),
    arg("--max-length", "--max_length", dest="max_length", type=int, default=TrainSettings.max_length,
        help=f"tokens per row training keeps (default: {TrainSettings.max_length})"),
    UI,
    model=False,
    examples=["%lora data --data chats --tokenizer tok", "%lora data --data rows --tokenizer tok --n 5 --ui text"],
)
def _data(ctx, args):
    tokenizer = ctx.lookup(args.tokenizer, "tokenizer")
    report = loss_mask(ctx.lookup(args.data), tokenizer, n=args.n, max_length=args.max_length)
    return pick({"static": report, "text": Text(repr(report))}, ctx.view_mode(args))
