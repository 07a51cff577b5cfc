"""The `genmodels` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from genmodels import _cli_checks


def _bench(args: argparse.Namespace) -> int:
    from genmodels import _bench

    device = torch.device(args.device)
    results = _bench.speed_table(device, repeat=args.repeat, compile=not args.no_compile)
    print(_bench.format_table(results, device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _backends(args: argparse.Namespace) -> int:
    import genmodels

    for name, entry in genmodels.backends().items():
        print(f"{name:<24} {'yes' if entry['available'] else 'no':<4} {entry['detail']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from genmodels.training import TrainConfig, train

    config = TrainConfig(
        model=args.model,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        out=args.out,
        resume=args.resume,
        backend=args.backend,
        loss=args.loss,
        binarize=args.binarize,
        progress=args.progress,
        overwrite=args.overwrite,
        threads=args.threads,
    )
    train(config)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from genmodels.training.images import save_grid
    from genmodels.training.restore import restore

    model, ckpt = restore(args.checkpoint)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    if args.interpolate:
        if not hasattr(model, "interpolate"):
            raise ValueError(f"--interpolate: a {ckpt['model_kind']} model cannot interpolate")
        images = _interpolation(model, ckpt["config"], args.n, generator)
        nrow = args.steps
    else:
        kwargs = {"truncation": args.truncation} if args.truncation is not None else {}
        if kwargs and ckpt["model_kind"] != "dcgan":
            raise ValueError("--truncation applies to GANs only")
        if args.method is not None:
            if ckpt["model_kind"] not in ("pixelcnn", "gated-pixelcnn"):
                raise ValueError("--method applies to the PixelCNNs only")
            kwargs["method"] = args.method
        start = time.perf_counter()
        images = model.sample(args.n, **kwargs)
        seconds = time.perf_counter() - start
        nrow = None
        print(f"sampled {len(images)} images in {seconds:.2f} s "
              f"({len(images) / max(seconds, 1e-9):.1f} images/s)")  # fmt: skip
    save_grid(images, ckpt["levels"], args.out, nrow=nrow)
    print(f"wrote {len(images)} samples to {args.out}")
    return 0


def _interpolation(model, config: dict, n: int, generator) -> torch.Tensor:
    rows = max(1, n // 8)
    if hasattr(model, "encode"):
        from genmodels.data import load

        # Encoder-based models interpolate between test images of the data they learned.
        data = load(config["data"], binarize=config.get("binarize", False))
        idx = torch.randperm(len(data.test), generator=generator)[: 2 * rows]
        x = data.test.images[idx].long()
        path = model.interpolate(x[:rows], x[rows:], steps=8)
    else:
        path = model.interpolate(rows, steps=8, generator=generator)
    return path.transpose(0, 1).flatten(0, 1)


def _evaluate(args: argparse.Namespace) -> int:
    from genmodels.data import load
    from genmodels.training.restore import restore
    from genmodels.training.tasks import TASKS

    model, ckpt = restore(args.checkpoint)
    config = ckpt["config"]
    splits = load(args.data or config["data"], binarize=config.get("binarize", False))
    torch.manual_seed(args.seed)
    task = TASKS[ckpt["model_kind"]](splits, {}, loss=config.get("loss"))
    metrics = task.evaluate(model, splits.test, torch.device("cpu"))
    print(json.dumps(metrics, indent=2))
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from genmodels.adapt.run import AdaptConfig, adapt, compare

    method = args.method
    config = AdaptConfig(
        method=method, source=args.source, target=args.target, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
        out=None if method == "compare" else args.out, resume=args.resume,
        overwrite=args.overwrite, progress=args.progress, backend=args.backend,
        encoder=args.encoder, image_size=args.image_size, grayscale=args.grayscale,
        source_size=args.source_size, target_size=args.target_size,
        pretrain_epochs=args.pretrain_epochs, source_shift=args.source_shift,
        adversary=args.adversary,
        confusion_weight=args.confusion_weight, threads=args.threads,
    )  # fmt: skip
    if method == "compare":
        if args.resume is not None or args.seed is not None:
            raise ValueError("adapt compare runs seeds 0..N-1 itself: no --seed or --resume")
        compare(dataclasses.replace(config, method=None), seeds=args.seeds, out=args.out)
    else:
        if method is None and args.resume is None:
            raise ValueError("adapt: give a method, or --resume DIR to continue a run")
        adapt(config)
    return 0


def _add_adapt_parser(sub) -> None:
    from genmodels.adapt.adda import ADVERSARIES
    from genmodels.adapt.run import METHODS
    from genmodels.models.adapt import ENCODERS

    adapt = sub.add_parser(
        "adapt",
        help="unsupervised domain adaptation: train on --source labels, adapt to --target",
    )
    adapt.add_argument(
        "method", nargs="?", choices=[*METHODS, "compare"],
        help="compare: every method over --seeds seeds, table.md in --out",
    )  # fmt: skip
    adapt.add_argument("--source", help="labelled data (default synth-digits): "
                       "synth-digits | digits | mnist:DIR | usps:PATH | svhn:DIR")  # fmt: skip
    adapt.add_argument("--target", help="unlabelled data (default digits), same choices")
    adapt.add_argument("--epochs", type=int, help="all epochs (default: the method's own)")
    adapt.add_argument("--pretrain-epochs", type=int, help="source epochs before adapting")
    adapt.add_argument("--batch-size", type=int, help="per domain (default 64)")
    adapt.add_argument("--lr", type=float, help="pretraining learning rate (default 1e-3)")
    adapt.add_argument("--seed", type=int, help="default 0")
    adapt.add_argument("--seeds", type=int, default=3, help="compare: seeds 0..N-1")
    adapt.add_argument("--device", default="cpu")
    adapt.add_argument("--out", help="run directory (default runs/adapt-METHOD)")
    adapt.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    adapt.add_argument("--overwrite", action="store_true", help="start over in --out")
    adapt.add_argument("--image-size", type=int, help="resize both domains to NxN")
    adapt.add_argument("--grayscale", action="store_true", default=None,
                       help="RGB to one channel (SVHN -> MNIST)")  # fmt: skip
    adapt.add_argument("--source-size", type=int, help="use N source training images")
    adapt.add_argument("--target-size", type=int, help="use N target training images")
    adapt.add_argument("--encoder", choices=ENCODERS, help="default: lenet from 28x28, else small")
    adapt.add_argument("--source-shift", type=int, metavar="PIXELS",
                       help="shift source images at random by up to PIXELS while the source "
                       "model trains (default image size // 8, at least 1; 0: off)")  # fmt: skip
    adapt.add_argument("--adversary", choices=sorted(ADVERSARIES), help="adda (default gan)")
    adapt.add_argument("--confusion-weight", type=float,
                       help="confusion: weight of the confusion loss (default 0.1)")  # fmt: skip
    adapt.add_argument(
        "--backend", choices=["auto", "native", "triton", "reference"], help="default auto"
    )
    adapt.add_argument(
        "--progress", action=argparse.BooleanOptionalAction,
        help="progress bars (default: when stderr is a terminal)",
    )  # fmt: skip
    _add_threads_argument(adapt)
    adapt.set_defaults(run=_adapt)


def _add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", metavar="N|auto",
        help="CPU threads: N, or auto (time the steps with each count and keep the fastest; "
        "not bitwise reproducible). Default: torch's",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genmodels", description="Fast kernels and models for deep generative modelling."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="speed of every op against the plain PyTorch recipe")
    bench.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    bench.add_argument("--repeat", type=int, default=5, help="timed runs per provider")
    bench.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    bench.set_defaults(run=_bench)
    from genmodels.training.tasks import TASKS

    train = sub.add_parser("train", help="train a model and write a run directory")
    models = sorted(k for k in TASKS if not k.startswith("adapt-"))  # those: genmodels adapt
    train.add_argument("model", nargs="?", choices=models, help="optional with --resume")
    train.add_argument("--data", help="digits (default) | mnist:DIR | cifar10:DIR | folder:DIR")
    train.add_argument("--epochs", type=int, help="default: the model's own")
    train.add_argument("--batch-size", type=int, help="default 64")
    train.add_argument("--lr", type=float, help="default: the model's own")
    train.add_argument("--seed", type=int, help="default 0")
    train.add_argument("--device", default="cpu")
    train.add_argument("--amp", action="store_true", default=None, help="mixed precision")
    train.add_argument("--out", help="run directory (default runs/MODEL)")
    train.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR (or its checkpoint.pt)"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="start over in an --out that holds a run"
    )
    train.add_argument(
        "--backend", choices=["auto", "native", "triton", "reference"], help="default auto"
    )
    train.add_argument(
        "--loss",
        help="dcgan: minimax | non-saturating | wgan-gp (default) | dragan | lsgan | hinge",
    )
    train.add_argument("--binarize", action="store_true", default=None, help="MNIST as 2 levels")
    train.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bars (default: when stderr is a terminal)",
    )
    _add_threads_argument(train)
    train.set_defaults(run=_train)

    sample = sub.add_parser("sample", help="draw a grid of samples from a checkpoint")
    sample.add_argument("checkpoint")
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--out", default="samples.png")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--truncation", type=float, help="GANs: truncate the latent at this radius")
    sample.add_argument("--method", choices=("cached", "naive"),
                        help="PixelCNNs: the sampler (default cached)")  # fmt: skip
    sample.add_argument(
        "--interpolate", action="store_true", help="latent interpolations (VAE, GAN)"
    )
    sample.add_argument("--steps", type=int, default=8, help=argparse.SUPPRESS)
    sample.set_defaults(run=_sample)

    evaluate = sub.add_parser("evaluate", help="test metrics of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--data", help="default: the data it was trained on")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(run=_evaluate)

    _add_adapt_parser(sub)

    backends = sub.add_parser("backends", help="which kernels this install has, and why not")
    backends.set_defaults(run=_backends)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _cli_checks.check_args(args)
        return args.run(args)
    except KeyboardInterrupt:
        print(_cli_checks.interrupted(args), file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    except Exception as exc:
        if os.environ.get(_cli_checks.DEBUG_ENV, "0") not in ("", "0"):
            raise
        from genmodels.training.rundir import RunError

        if isinstance(exc, RunError):
            print(f"genmodels: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, (ValueError, OSError)):
            # Bad arguments, data or files: usage and the message, exit status 2.
            parser.error(_cli_checks.one_line(exc))
        if isinstance(exc, RuntimeError):
            # Mostly torch refusing something (memory, a device, a backend); a bug too.
            print(
                f"genmodels: error: {_cli_checks.one_line(exc)} "
                f"({_cli_checks.DEBUG_ENV}=1 shows the traceback)",
                file=sys.stderr,
            )
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
