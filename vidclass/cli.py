"""The `vidclass` command.

ML commands live here; the service (worker, api, up, db) plugs its own commands in through the
`vidclass.commands` entry point, so this module never imports Flask or Celery.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

# Torch on a few shared cores: idle OpenMP threads must not spin. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("vidclass")


def _add_asset_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", help="checkpoints folder (env VIDCLASS_MODELS_DIR; default models_enhanced/)")
    p.add_argument("--features-dir", help="features folder (env VIDCLASS_FEATURES_DIR; default features_enhanced/)")
    p.add_argument("--processed-dir", help="name index folder (env VIDCLASS_PROCESSED_DIR; default data/processed/test/)")


def _classifier(args):
    from vidclass.model.classify import Classifier
    return Classifier(models_dir=args.models_dir, features_dir=args.features_dir,
                      processed_dir=args.processed_dir)


def _format_result(r: dict) -> str:
    probs = "  ".join(f"{k} {v:.1%}" for k, v in sorted(r["probabilities"].items(), key=lambda kv: -kv[1]))
    sub = f" / {r['subcategory']}" if r.get("subcategory") else ""
    uncertain = " UNCERTAIN" if r.get("uncertain") else ""
    if r.get("confidence") is None:      # a mixed timeline: the shares say what it holds
        return f"{r['target']}: {r['label']} ({_shares_text(r)}; {r['elapsed_s']:.2f}s)\n    {probs}"
    return (f"{r['target']}: {r['label']}{sub}{uncertain} ({r['confidence']:.1%}, agreement "
            f"{r.get('agreement', 1.0):.0%}, {r['elapsed_s']:.2f}s)\n    {probs}")


def _shares_text(r: dict) -> str:
    """"Gaming 60%, Natural_Content 40%": a timeline's share of the duration per class."""
    return ", ".join(f"{k} {v:.0%}" for k, v in sorted((r.get("label_shares") or {}).items(),
                                                        key=lambda kv: -kv[1]) if v > 0)


def _private_url_note(target) -> str | None:
    """The local CLI fetches what its user asks for, private addresses included (the service
    refuses them): say so when a URL's host is not public."""
    import socket
    from urllib.parse import urlsplit

    from vidclass.media.netguard import kind_of_address, non_public_reason
    from vidclass.model.classify import is_url

    if not is_url(target):
        return None
    try:
        host = urlsplit(str(target)).hostname or ""
        reasons = {non_public_reason(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, ValueError):
        return None
    reasons.discard(None)
    if not reasons:
        return None
    return (f"note: {host} is {kind_of_address(sorted(reasons)[0])}; the local CLI fetches it (the service "
            f"would refuse it unless ALLOWED_PRIVATE_NETWORKS allows it)")


def cmd_classify(args) -> int:
    from tqdm import tqdm

    clf = _classifier(args)
    failed = 0
    as_json = args.json or args.jsonl
    collected = []              # --json: one document (an array) at the end

    def emit(record: dict) -> None:
        if args.jsonl:
            print(json.dumps(record), flush=True)
        else:
            collected.append(record)

    bar = tqdm(args.targets, unit="video", disable=as_json or len(args.targets) < 2, file=sys.stderr)
    for target in bar:
        bar.set_postfix_str(str(target)[-40:])
        note = _private_url_note(target)
        if note:
            tqdm.write(note, file=sys.stderr)
        try:
            result = clf.classify_target(target, exact=args.exact, segments=args.segments,
                                         segment_options=_segment_options(args))
        except Exception as exc:  # one bad target must not stop the others
            failed += 1
            if as_json:
                emit({"target": target, "error": type(exc).__name__, "message": str(exc)})
            else:
                tqdm.write(f"error: {target}: {exc}", file=sys.stderr)
            continue
        if as_json:
            emit(result)
        else:
            # tqdm.write: results and the progress bar (stderr) never interleave on one line
            tqdm.write(_format_result(result))
            if result.get("segments"):
                from vidclass.model.timeline import format_table

                mixed = "mixed, " if result.get("mixed") else ""
                tqdm.write(f"    timeline ({mixed}{len(result['segments'])} segments: {_shares_text(result)})")
                tqdm.write(format_table(result["segments"]))
    if args.json:
        print(json.dumps(collected, indent=1))
    return 1 if failed else 0


def _segment_options(args):
    """SegmentOptions: its defaults, the service's SEGMENT_* environment variables (db/settings.py
    documents them; read here directly, as the core never imports the service), then the flags."""
    if not getattr(args, "segments", False):
        return None
    from dataclasses import fields

    from vidclass.model.timeline import SegmentOptions

    env = {"min_segment_s": "SEGMENT_MIN_S", "max_segment_s": "SEGMENT_MAX_S",
           "max_frames": "SEGMENT_MAX_FRAMES", "mixed_share": "SEGMENT_MIXED_SHARE"}
    kinds = {f.name: type(f.default) for f in fields(SegmentOptions)}
    from_env = {k: kinds[k](os.environ[v]) for k, v in env.items() if os.environ.get(v)}
    return SegmentOptions(**from_env).with_(min_segment_s=args.min_segment)


def cmd_videos(args) -> int:
    by_category = _classifier(args).test_set.names_by_category()
    if args.json:
        print(json.dumps(by_category, indent=1))
        return 0
    for category, names in by_category.items():
        print(f"{category} ({len(names)})")
        for name in names:
            print(f"  {name}")
    return 0


def cmd_test_accuracy(args) -> int:
    report = _classifier(args).test_accuracy()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"Test set: {report['num_samples']} videos, model {report['model_version']}")
    print(f"Ensemble accuracy {report['accuracy']:.1%}, weighted F1 {report['weighted_f1']:.3f}")
    print(f"{'class':<17}{'precision':>10}{'recall':>8}{'f1':>8}{'n':>5}")
    for name, m in report["per_class"].items():
        print(f"{name:<17}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}{m['support']:>5}")
    print("confusion matrix (rows true, columns predicted):")
    for name, row in zip(report["class_names"], report["confusion_matrix"]):
        print(f"  {name:<17}" + "".join(f"{v:>5}" for v in row))
    for m in report["members"]:
        print(f"member {m['member']}: accuracy {m['accuracy']:.1%}")
    return 0


def cmd_interactive(args) -> int:
    clf = _classifier(args)
    try:
        names = [n for ns in clf.test_set.names_by_category().values() for n in ns]
    except Exception as exc:
        print(f"(no test set: {exc})")
        names = []
    for i, name in enumerate(names, 1):
        print(f"{i:4d}. {name}")
    print("Enter a number or name from the list, a URL, or a path to a video; 'q' quits.")
    while True:
        try:
            choice = input("vidclass> ").strip()
        except EOFError:
            print()
            return 0
        if choice in ("q", "quit", "exit"):
            return 0
        if not choice:
            continue
        if choice.isdigit() and 1 <= int(choice) <= len(names):
            choice = names[int(choice) - 1]
        try:
            print(_format_result(clf.classify_target(choice)))
        except Exception as exc:
            print(f"error: {exc}")


def cmd_extract(args) -> int:
    from vidclass.features.backbone import LITE0, LITE0_STAGES, default_pipeline, shipped_pipeline
    from vidclass.training.dataset import extract_dataset
    from vidclass.model.name_index import write_processed_index
    from vidclass.features.pipeline import CONTENT_STATS

    if args.pipeline == "enhanced":
        pipeline = shipped_pipeline()
    else:
        extras = () if args.pipeline == "original" else (CONTENT_STATS,)
        backbone = LITE0_STAGES if args.pipeline == "enhanced-v1" else LITE0
        pipeline = default_pipeline(extras=extras, backbone=backbone)
    if args.no_multiscale:
        pipeline = pipeline.with_(scales=())
    summary = extract_dataset(args.data_dir, args.out, pipeline, manifest=args.manifest,
                              test_fraction=args.test_fraction, val_fraction=args.val_fraction,
                              seed=args.seed, show_progress=not args.json)
    if args.index_dir:
        failed = {f["name"] for f in summary["failures"]}
        write_processed_index(args.index_dir, [
            (c["name"], c["category"], c["subcategory"])
            for c in summary["clips"]["test"] if c["name"] not in failed])
    out = {k: summary[k] for k in ("splits", "failures", "pipeline")}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for split, s in summary["splits"].items():
            print(f"{split}: {s['clips']} clips {s['by_category']}")
        for f in summary["failures"]:
            print(f"failed: {f['name']}: {f['error']}")
    return 0


def cmd_train(args) -> int:
    from dataclasses import fields

    from vidclass import paths
    from vidclass.training.train import TrainConfig, train_ensemble

    # Flags left unset keep TrainConfig's defaults: one place holds the recipe.
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    cfg = TrainConfig(**given)
    if args.full_size:
        cfg.arch, cfg.hidden_dim, cfg.num_lstm_layers, cfg.num_attention_heads, cfg.dropout = \
            "temporal", 768, 4, 12, 0.4
    manifest = train_ensemble(paths.features_dir(args.features_dir), paths.models_dir(args.models_dir),
                              cfg, show_progress=not args.json, reports_dir=args.reports)
    if args.json:
        print(json.dumps(manifest, indent=1))
    elif "crossval" in manifest:
        cv = manifest["crossval"]
        print(f"cross-validated on {cv['num_sources']} unseen source families: accuracy {cv['accuracy']:.1%} "
              f"(clips {cv['clip_accuracy']:.1%}; locked families "
              + (f"{cv['locked_accuracy']:.1%}" if cv.get("locked_accuracy") is not None else "none")
              + f"), ECE {cv['ece']:.3f}; recall "
              + ", ".join(f"{k} {v:.2f}" for k, v in cv["recall"].items()))
        print(f"{len(manifest['members'])} members fitted on all {manifest['training_data']['num_clips']} clips"
              + (f"; report in {args.reports}" if args.reports else ""))
    else:
        for m in manifest["member_metrics"]:
            print(f"{m['file']}: epoch {m['epoch']}, val accuracy {m['val_accuracy']:.1%}")
    return 0


def cmd_prepare(args) -> int:
    """The ONNX exports inference runs on, made now (install, image build) rather than at first use."""
    from vidclass.features import backbone, drawing_net
    from vidclass.features.pipeline import DRAWING_NET

    pipeline = backbone.shipped_pipeline()
    paths = [backbone.export_onnx(pipeline)]
    if DRAWING_NET in pipeline.extras:
        paths.append(drawing_net.export_onnx())
    for path in paths:
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_pool_corpus(args) -> int:
    from vidclass import paths
    from vidclass.training.retrain import write_corpus_pooled

    out = write_corpus_pooled(paths.features_dir(args.features_dir), args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): the corpus's clip vectors, for retraining "
          f"from corrections")
    return 0


def cmd_evaluate(args) -> int:
    from vidclass import paths
    from vidclass.model.ensemble import Ensemble
    from vidclass.training.evaluate import evaluate

    from vidclass.model.name_index import test_features_path

    features = Path(args.features) if args.features else test_features_path(args.features_dir)
    ensemble = Ensemble.load(paths.models_dir(args.models_dir))
    result = evaluate(ensemble, features, args.out)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for key, title in (("plain", "without TTA"), ("tta", "with TTA")):
        r = result[key]
        print(f"{title}: accuracy {r['accuracy']:.1%}, weighted F1 {r['weighted_f1']:.3f}, "
              f"macro F1 {r['macro_f1']:.3f}"
              + (f", subcategory accuracy {r['subcategory_accuracy']:.1%}" if "subcategory_accuracy" in r else ""))
        print("   " + ", ".join(f"{k} F1 {v['f1']:.3f}" for k, v in r["per_class"].items()))
        print("   members: " + ", ".join(f"{m['accuracy']:.1%}" for m in r["members"]))
    if args.out:
        print(f"wrote {Path(args.out) / 'evaluation.json'} and confusion_matrix.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidclass", description="Video content-type classifier")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="classify test-set names, local files or URLs",
                       description="Classify each TARGET: a test-set video name (as `vidclass videos` "
                                   "lists), a path to a local video file, or an http(s) URL of a video "
                                   "or of a page yt-dlp understands.")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="test-set name, local video file or http(s) URL")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="print one JSON document at the end: an array with an object per target "
                          "(a failed target: {target, error, message})")
    out.add_argument("--jsonl", action="store_true",
                     help="stream JSON Lines: one object per target as each finishes")
    p.add_argument("--exact", action="store_true", help="decode exact frames instead of nearest keyframes")
    p.add_argument("--segments", action="store_true",
                   help="add a per-segment timeline (files and URLs): a table, or `segments` in --json")
    p.add_argument("--min-segment", type=float, metavar="S",
                   help="shortest segment in seconds (default SEGMENT_MIN_S)")
    _add_asset_flags(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("videos", help="list the indexed test-set videos by category")
    p.add_argument("--json", action="store_true")
    _add_asset_flags(p)
    p.set_defaults(func=cmd_videos)

    p = sub.add_parser("test-accuracy", help="batch accuracy test over the indexed test set")
    p.add_argument("--json", action="store_true")
    _add_asset_flags(p)
    p.set_defaults(func=cmd_test_accuracy)

    p = sub.add_parser("interactive", help="classify videos one at a time at a prompt")
    _add_asset_flags(p)
    p.set_defaults(func=cmd_interactive)

    p = sub.add_parser("extract", help="labelled folders -> train/val/test features files")
    p.add_argument("data_dir", help="folder of {Category}/{subcategory}/* videos (MANIFEST.tsv optional)")
    p.add_argument("--out", default="features_enhanced", help="output folder")
    p.add_argument("--manifest", help="MANIFEST.tsv with groups (default DATA_DIR/MANIFEST.tsv)")
    p.add_argument("--pipeline", choices=("enhanced", "enhanced-v1", "enhanced-pooled", "original"),
                   default="enhanced",
                   help="enhanced: the shipped model's (Lite0 stage statistics + pooled features, content "
                        "statistics, drawing net; 32 frames); enhanced-v1: the previous release's (stage "
                        "statistics + content statistics, 64 frames, multi-scale); enhanced-pooled: pooled "
                        "Lite0 1280-d + content statistics; original: pooled Lite0 1280-d only")
    p.add_argument("--no-multiscale", action="store_true", help="turn the temporal multi-scale averaging off")
    p.add_argument("--index-dir", help="also write the test split's name index (processed_data.pt) here")
    p.add_argument("--seed", type=int, default=0, help="seed of the source-disjoint split")
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("train", help="train an ensemble on extracted features")
    _add_asset_flags(p)
    p.add_argument("--num-models", type=int, help="ensemble members (default 4)")
    p.add_argument("--seed", type=int, help="seed of member 1; member i uses seed + i - 1")
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int, help="epochs without a better validation accuracy before stopping")
    p.add_argument("--min-epochs", type=int, help="epochs before early stopping may pick a checkpoint")
    p.add_argument("--no-refit", dest="refit", action="store_false", default=None,
                   help="keep each member as early stopping picked it instead of retraining it "
                        "on train + validation for that many epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--arch", choices=("pooled", "temporal"),
                   help="pooled: linear model of the average frame (default); temporal: the original "
                        "BiLSTM + attention model (sized by --hidden-dim/--layers/--heads/--full-size)")
    p.add_argument("--hidden-dim", type=int)
    p.add_argument("--layers", dest="num_lstm_layers", type=int)
    p.add_argument("--heads", dest="num_attention_heads", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--full-size", action="store_true", help="the original 768-wide 4-layer model (GPU)")
    p.add_argument("--pooling", choices=("mean_std", "mean"),
                   help="pooled model: mean_std (the shipped recipe: all splits, cross-validated) or mean "
                        "(the previous release's SGD recipe on train/val)")
    p.add_argument("--recipe", choices=("frames", "pooled", "baseline"),
                   help="linear recipe to fit and ship (default pooled); the gate compares it with the "
                        "baseline (and the other recipes) on family folds and locked families")
    p.add_argument("--l2", type=float, help="linear recipes: L2 strength (default: the recipe's)")
    p.add_argument("--cv-folds", type=int, help="linear recipes: folds of whole source families (default 10; 0 = one family out)")
    p.add_argument("--curve-repeats", type=int, help="shipped recipe: learning-curve repeats (0 = no curve)")
    p.add_argument("--reports", default="reports", help="folder for the cross-validation report (default reports/)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prepare", help="make the ONNX exports of the shipped pipeline's nets now (in "
                                       "VIDCLASS_CACHE_DIR, keyed by weights and module source), not at first use")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pool-corpus", help="the corpus's clip vectors (features_enhanced/corpus_pooled.npz), "
                                           "which retraining from corrections starts from")
    _add_asset_flags(p)
    p.add_argument("--out", help="file to write (default FEATURES_DIR/corpus_pooled.npz)")
    p.set_defaults(func=cmd_pool_corpus)

    p = sub.add_parser("evaluate", help="metrics of the ensemble on a features file")
    _add_asset_flags(p)
    p.add_argument("--features", help="features file (default FEATURES_DIR/test_features_multiscale.h5 or test_features.h5)")
    p.add_argument("--out", help="folder for evaluation.json and confusion_matrix.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    for ep in entry_points(group="vidclass.commands"):
        try:
            register = ep.load()
        except ImportError as exc:  # the service's extras may be absent in a core-only install
            log.debug("commands %s unavailable: %s", ep.name, exc)
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # urllib3 logs each retry with the raw exception (MaxRetryError, NewConnectionError) before our
    # own sentence says what happened: keep its chatter for --verbose.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
