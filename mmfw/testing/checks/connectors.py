"""Connector contracts: ``forward`` returns ``num_tokens(grid)`` rows of width ``out_dim`` for square and
non-square grids, ``output_grid`` (when given) has ``num_tokens`` cells, samples stay independent, gradients reach
every trainable parameter and the input, and a bfloat16 connector accepts a float32 encoder's output."""

from __future__ import annotations

import torch

from mmfw.connectors.base import Connector
from mmfw.testing.core import ComponentUnderTest, contract, listing, missing_grads

KIND = "connectors"
IN_DIM, OUT_DIM = 32, 48
GRIDS = [(4, 4), (3, 5), (2, 7), (6, 6)]


def build(cut: ComponentUnderTest) -> Connector:
    """Built with ``IN_DIM != OUT_DIM``, or with equal widths for a connector that rejects different ones."""
    torch.manual_seed(0)
    reg = cut.registries.connectors
    fix = "the connector must build from its example() config with (cfg, in_dim, out_dim)"
    try:
        return reg.build(cut.config, in_dim=IN_DIM, out_dim=OUT_DIM)
    except ValueError:
        return cut.run(f"building it with in_dim=out_dim={OUT_DIM}",
                       lambda: reg.build(cut.config, in_dim=OUT_DIM, out_dim=OUT_DIM), fix)
    except Exception as e:
        cut.fail(f"building it raised {type(e).__name__}: {e}", fix)


@contract(KIND, "widths")
def widths(cut: ComponentUnderTest) -> None:
    """Different input and output widths are supported, or rejected with a ``ValueError`` naming both."""
    try:
        conn = cut.registries.connectors.build(cut.config, in_dim=IN_DIM, out_dim=OUT_DIM)
    except ValueError as e:
        cut.require(str(IN_DIM) in str(e) and str(OUT_DIM) in str(e),
                    f"in_dim={IN_DIM}, out_dim={OUT_DIM} was rejected with {str(e)!r}",
                    "the error must name both widths")
        return
    cut.require(conn.in_dim == IN_DIM and conn.out_dim == OUT_DIM, f"in_dim/out_dim are {conn.in_dim}/{conn.out_dim}",
                "pass in_dim and out_dim to Connector.__init__")


@contract(KIND, "token-count")
def token_count(cut: ComponentUnderTest) -> None:
    """For square and non-square grids, forward returns ``(N, num_tokens(grid), out_dim)`` finite rows."""
    conn = build(cut)
    for grid in GRIDS:
        x = torch.randn(2, grid[0] * grid[1], conn.in_dim)
        out = cut.run(f"forward for grid {grid}", lambda x=x, grid=grid: conn(x, grid),
                      "forward(features (N, rows*cols, in_dim), grid) must accept any grid")
        n = cut.run(f"num_tokens({grid})", lambda grid=grid: conn.num_tokens(grid), "num_tokens must accept any grid")
        cut.require(out.shape[0] == 2 and out.shape[1] == n,
                    f"forward returned {out.shape[1]} tokens per image for grid {grid} but num_tokens({grid}) says "
                    f"{n}", "num_tokens must return what forward produces")
        cut.require(out.shape[2] == conn.out_dim, f"forward returned width {out.shape[2]}, out_dim is {conn.out_dim}",
                    "the output width must be out_dim (the LLM's hidden size)")
        cut.require(torch.isfinite(out).all(), f"forward returned non-finite values for grid {grid}",
                    "check the initialisation")
        layout = conn.output_grid(grid)
        if layout is not None:
            cut.require(layout[0] * layout[1] == n, f"output_grid({grid}) is {layout} but num_tokens says {n}",
                        "output_grid must lay out exactly num_tokens rows (or return None)")


@contract(KIND, "samples-independent")
def samples_independent(cut: ComponentUnderTest) -> None:
    """In eval mode, an image's tokens do not depend on the other images of the batch."""
    conn = build(cut)
    grid = (3, 5)
    x = torch.randn(3, 15, conn.in_dim)
    conn.eval()
    with torch.no_grad():
        same = torch.allclose(conn(x, grid)[2:], conn(x[2:], grid), atol=1e-5, rtol=1e-4)
    cut.require(same, "the tokens of image 2 change when images 0 and 1 are in the same batch",
                "samples must not attend to or normalise over each other")


@contract(KIND, "gradients")
def gradients(cut: ComponentUnderTest) -> None:
    """Gradients reach every trainable parameter and the input features (the encoder trains through it)."""
    conn = build(cut)
    grid = (3, 5)
    x = torch.randn(2, 15, conn.in_dim, requires_grad=True)
    cut.run("backward", lambda: conn(x, grid).pow(2).mean().backward(), "forward must be differentiable")
    missing = missing_grads(conn.named_parameters())
    cut.require(not missing, f"trainable parameters {listing(missing)} received no gradient",
                "every trainable parameter must take part in forward (delete or freeze unused ones)")
    cut.require(x.grad is not None and x.grad.abs().sum() > 0, "no gradient reaches the input features",
                "the output must depend differentiably on the features (no detach, no argmax)")


@contract(KIND, "bfloat16")
def bfloat16(cut: ComponentUnderTest) -> None:
    """Cast to bfloat16 it returns bfloat16 tokens, and accepts float32 features (a float32 encoder, bf16 LLM)."""
    conn = build(cut).to(torch.bfloat16)
    grid = (4, 4)
    out = cut.run("forward of bfloat16 features", lambda: conn(torch.randn(1, 16, conn.in_dim, dtype=torch.bfloat16),
                                                               grid), "forward must work in bfloat16")
    cut.require(out.dtype == torch.bfloat16, f"a bfloat16 connector returned {out.dtype}",
                "return tokens in the connector's dtype")
    out = cut.run("forward of float32 features", lambda: conn(torch.randn(1, 16, conn.in_dim), grid),
                  "cast the features to the connector's weight dtype in forward")
    cut.require(tuple(out.shape) == (1, conn.num_tokens(grid), conn.out_dim),
                f"shape {tuple(out.shape)} for float32 input", "num_tokens must hold for float32 input too")
