"""``%lora plan``: what training would hold in memory, whether it fits the device, and what to change if not."""

from __future__ import annotations

from ..core.training.train import plan_memory
from .data_options import data_objects
from .router import Text, arg, verb


@verb(
    "plan", "memory plan of a training run: weights, gradients, AdamW state, measured activations; fits or not",
    arg("--data", required=True, help="variable with the training data"),
    arg("--tokenizer", help="variable with a tokenizer (for text data)"),
    arg("--loss", help="variable with a loss: loss_fn(output, target) or loss_fn(model, batch)"),
    arg("--batch-size", dest="batch_size", default=8, help="samples per micro-batch (default: 8)"),
    arg("--grad-accum", dest="grad_accum", default=1, help="micro-batches per optimizer step (default: 1)"),
    arg("--max-length", dest="max_length", default=512, help="tokens per text at most (default: 512)"),
    arg("--device", default="auto", help="auto | cpu | cuda[:N] | mps: the device whose free memory counts"),
    arg("--precision", default="auto", help="auto (bf16 autocast on capable GPUs) | bf16 | fp32"),
    arg("--grad-checkpointing", dest="grad_checkpointing", action="store_true",
        help="plan with gradient checkpointing on"),
    examples=["%lora plan model --data texts --tokenizer tok --batch-size 16",
              "%lora plan model --data texts --tokenizer tok --batch-size 64 --grad-checkpointing"],
)
def _plan(ctx, args):
    model = ctx.model(args.model)
    args.eval_data = None
    objects = data_objects(ctx, args)
    plan = plan_memory(model, objects["data"], tokenizer=objects["tokenizer"], loss_fn=objects["loss_fn"],
                       batch_size=args.batch_size, device=args.device, grad_accum=args.grad_accum,
                       max_length=args.max_length, precision=args.precision,
                       grad_checkpointing=args.grad_checkpointing)
    return Text(plan.table())
