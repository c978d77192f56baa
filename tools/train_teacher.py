r"""``relit-hands train-teacher --capture DIR --out RUN``: train the OLAT teacher on a light stage.

    relit-hands train-teacher --capture captures/lightstage --out runs/teacher --steps 20000
    torchrun --nproc_per_node 4 -m relit_hands.tools.train_teacher --capture ... --out ...   # DDP

Data: the capture's train-split OLAT and group frames (:mod:`.teacher_training` for the projection
and the loss). Validation ("held-out lights and poses"): the capture marks only environment frames
held out, so the tool holds out lit frames itself, deterministically: every frame of
``--holdout-poses`` poses (default 1 when the capture has >= 3 lit poses) and every frame that
uses one of ``--holdout-lights`` light ids (default: 10 % of the lights seen in lit frames, at
least 1 when there are >= 8 such frames; with ``--init-from`` the parent teacher's held-out lights). Those frames are never trained on; the summary reports
OLAT/group PSNR on them split by why they were held out. PSNR follows the evaluation harness
(:func:`relit_hands.tools.eval_metrics.psnr_linear`): linear HDR on the capture's hand-mask pixels,
peak = P99.5 of the evaluated reference hand pixels.

Each step: one lit frame per process, ``--cams`` random cameras of it; the texture of each camera
(the view direction enters the conditioning) is the sum over the frame's lit lights of the teacher's
single-light textures, projected by precomputed rasterization + ``grid_sample`` and compared with
the captured pixels (log-L1). Adam, cosine learning-rate decay, gradient clipping.

Outputs in RUN/: ``teacher.safetensors`` (final weights + config + loss scale in the header),
``checkpoints/step_XXXXXXX.safetensors`` + ``.optim.pt`` (optimizer state, loaded with
``weights_only=True``), ``state.json`` (last checkpoint, for ``--resume``), ``log.csv`` (always),
TensorBoard events (only when ``tensorboard`` is installed), ``loss_curve.png``,
``val/step_XXXXXXX.png`` (captured | predicted | |error| per validation view, every ``--val-every``
steps), ``summary.json``.

Multi-GPU / multi-process: run the same module under ``torchrun``; it initialises
``torch.distributed`` (NCCL on CUDA, gloo on CPU), wraps the teacher in DDP and only rank 0 writes.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..validation import NonFiniteError, OutputFolder, finite_float, int_range, write_text_atomic

__all__ = ["main", "build_parser", "train", "split_frames", "evaluate_frames"]


def build_parser(prog: str = "relit-hands train-teacher") -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog=prog, description="Train the OLAT teacher on a light-stage capture."))


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--capture", required=True, help="capture folder (docs/capture_format.md)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int_range(1, 10_000_000), default=2000)
    p.add_argument("--resolution", type=int_range(16, 2048), default=256, help="UV texture size R")
    p.add_argument("--cams", type=int_range(1, 256), default=4, help="cameras per step")
    p.add_argument("--lr", type=finite_float(1e-12, 10.0), default=2e-3)
    p.add_argument("--loss", choices=("l2", "log_l1"), default="l2", help="see teacher_training's docstring")
    p.add_argument("--latent-lr", type=finite_float(1e-12, 10.0), default=1e-2)
    p.add_argument("--albedo-prior", action=argparse.BooleanOptionalAction, default=True,
                   help="scale the learned reflectance by the asset's albedo texture (teacher.py)")
    p.add_argument("--specular-prior", action=argparse.BooleanOptionalAction, default=False,
                   help="add the GGX lobe of the asset's roughness / specular texture with a learned gain "
                        "(teacher.py; measured in the README, not yet used for the shipped teacher)")
    p.add_argument("--learn-specular-alpha", action="store_true",
                   help="also learn the specular prior's GGX alpha per texel (a log-scale of the asset's, starting "
                        "at 0; teacher.py); works with --init-from a teacher that has the specular prior")
    p.add_argument("--translucency", type=finite_float(0.0, 100.0), default=0.0, metavar="MFP_MM",
                   help="add the ray-cast translucency channel with this mean free path in mm (e.g. 4; "
                        "teacher_inputs.py) and a learned translucent term; 0: off")
    p.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=False,
                   help="train on the capture's images denoised by Intel Open Image Denoise with noise-free "
                        "albedo / normal guides (tools/denoise.py; needs pyoidn); validation and held-out "
                        "figures stay against the raw images")
    p.add_argument("--latent-channels", type=int_range(1, 256), default=16)
    p.add_argument("--trunk-channels", type=int_range(1, 512), default=32)
    p.add_argument("--head-channels", type=int_range(1, 512), default=32)
    p.add_argument("--holdout-poses", type=int, default=None, help="lit poses held out (default: auto)")
    p.add_argument("--holdout-lights", type=int, default=None, help="light ids held out (default: auto)")
    p.add_argument("--val-every", type=int_range(1, 10_000_000), default=250)
    p.add_argument("--val-views", type=int_range(1, 256), default=4, help="views in each validation image")
    p.add_argument("--ckpt-every", type=int_range(1, 10_000_000), default=500)
    p.add_argument("--log-every", type=int_range(1, 10_000_000), default=10)
    p.add_argument("--resume", action="store_true", help="continue from RUN/state.json")
    p.add_argument("--init-from", default=None, metavar="TEACHER",
                   help="start a new run from these teacher weights (a .safetensors file or run folder): its "
                        "architecture, asset and translucency are kept, the network flags are ignored; a fresh "
                        "optimizer and learning-rate schedule (fine-tuning on another capture); the run holds out the "
                        "parent's held-out lights unless --holdout-lights says otherwise")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out folder that is not a train-teacher run (never the capture)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int_range(1, 1024), default=1, help="torch CPU threads per process")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--allow-partial", action="store_true",
                   help="train on the views of a capture that are rendered so far (e.g. one made with "
                        "lightstage --views-per-frame); without it a missing image is an error")
    p.add_argument("--no-progress", action="store_true")
    return p


# ------------------------------------------------------------------------------------ splits

def rendered_views_only(capture) -> dict:
    """Restrict every lit frame of ``capture`` (loaded with ``check_files=False``) to the cameras
    whose image and mask exist, drop lit frames with none; returns {'views', 'views_total',
    'frames_dropped'}. The capture's held-out environment frames are left alone (never trained on)."""
    kept, total, dropped = [], 0, 0
    n_views = 0
    for f in capture.frames:
        if f.kind not in ("olat", "group"):
            kept.append(f)
            continue
        total += len(f.images)
        have = [c for c in f.images if Path(f.images[c]).is_file() and Path(f.masks[c]).is_file()]
        if not have:
            dropped += 1
            continue
        f.images = {c: f.images[c] for c in have}
        f.masks = {c: f.masks[c] for c in have}
        n_views += len(have)
        kept.append(f)
    capture.frames = kept
    return {"views": n_views, "views_total": total, "frames_dropped": dropped}


def split_frames(capture, holdout_poses=None, holdout_lights=None, seed: int = 0, fixed: dict | None = None,
                 lights: list | None = None) -> dict:
    """{'train': [...], 'val_pose': [...], 'val_light': [...], 'heldout_lights': [ids],
    'heldout_pose_keys': [...]} over the capture's train-split lit frames (module docstring).

    ``fixed`` ({'heldout_pose_keys', 'heldout_lights'}, a run's ``split.json``) reuses a run's
    held-out poses and lights exactly: a resumed run must not train on what it held out, even when
    the capture has grown since (a different frame list would draw a different random split).
    ``lights`` (ids) holds out exactly these lights, the poses drawn as usual: a teacher fine-tuned
    with ``--init-from`` keeps its parent's held-out lights, so its held-out-light figure still
    measures lights no step of either run trained on."""
    from .teacher_training import pose_key

    lit = [f for f in capture.frames if f.kind in ("olat", "group") and f.split == "train"]
    keys = []
    for f in lit:
        k = pose_key(f.scene)
        if k not in keys:
            keys.append(k)
    rng = random.Random(seed)
    used = sorted({i for f in lit for i in f.lights_on})
    if fixed is not None:
        hp, hl = set(fixed["heldout_pose_keys"]), {int(i) for i in fixed["heldout_lights"]}
    else:
        if holdout_poses is None:
            holdout_poses = 1 if len(keys) >= 3 else 0
        hp = set(rng.sample(keys, min(holdout_poses, max(0, len(keys) - 1)))) if holdout_poses else set()
        if holdout_lights is None:
            holdout_lights = max(1, len(used) // 10) if len(lit) >= 8 else 0
        # prefer lights that appear in OLAT frames (a clean single-light held-out test)
        olat_lights = sorted({f.lights_on[0] for f in lit if f.kind == "olat" and pose_key(f.scene) not in hp})
        pool = olat_lights if len(olat_lights) > holdout_lights else used
        hl = set(rng.sample(pool, min(holdout_lights, max(0, len(pool) - 1)))) if holdout_lights else set()
        if lights is not None:
            hl = {int(i) for i in lights}
    out = {"train": [], "val_pose": [], "val_light": []}
    for f in lit:
        if pose_key(f.scene) in hp:
            out["val_pose"].append(f)
        elif hl & set(f.lights_on):
            out["val_light"].append(f)
        else:
            out["train"].append(f)
    if not out["train"] and fixed is None:  # a capture too small to hold anything out
        out = {"train": lit, "val_pose": [], "val_light": []}
        hp, hl = set(), set()
    out["heldout_lights"] = sorted(hl)
    out["heldout_pose_keys"] = sorted(hp)
    return out


# ------------------------------------------------------------------------------------ model io

def run_split(out: Path, capture) -> dict | None:
    """The held-out poses and lights of the run in ``out`` (for :func:`split_frames`'s ``fixed``):
    its ``split.json``; for a run made before that file existed, its ``summary.json``'s held-out
    lights and the pose keys of the frames its held-out-pose validation used; None for no run."""
    from .teacher_training import pose_key

    out = Path(out)
    if (out / "split.json").is_file():
        return json.loads((out / "split.json").read_text())
    if not (out / "summary.json").is_file():
        return None
    s = json.loads((out / "summary.json").read_text())
    ids = {v["frame"] for v in s.get("per_view", {}).get("heldout_poses", [])}
    by_id = {f.id: f for f in capture.frames}
    missing = sorted(ids - set(by_id))
    if missing:
        raise ValueError(f"{out}: the run held out frames {missing[:3]} that the capture does not have")
    return {"heldout_pose_keys": sorted({pose_key(by_id[i].scene) for i in ids}),
            "heldout_lights": list(s.get("heldout_lights", []))}


def predict_view(model, cache, frame, cam_id, grad: bool = False):
    """(textures [H,3,R,R], TrainingView) of a lit frame seen from ``cam_id``."""
    from .teacher_training import conditioning_for_frame

    view = cache.view(frame, cam_id)
    geo, cond, falloff, inten = conditioning_for_frame(cache, frame, view.camera_centre)
    with torch.set_grad_enabled(grad):
        tex = model(cond, falloff, inten, geo.pose, geo.valid, sum_lights=True)
    return tex, view


def evaluate_frames(model, cache, frames, cam_ids=None, peak=None) -> dict:
    """PSNR (harness convention) of the teacher on lit frames: {'psnr_mean', 'per_view': [...], 'peak'}."""
    from .eval_metrics import psnr_linear
    from .teacher_training import project_image

    views = []
    for f in frames:
        for c in (cam_ids or list(f.images)):
            ref = cache.capture.image(f, c)
            mask = cache.capture.mask(f, c) > 0
            views.append((f, c, ref, mask))
    if not views:
        return {"psnr_mean": None, "per_view": [], "peak": None, "views": 0}
    if peak is None:
        peak = float(np.percentile(np.concatenate([r[m] for _, _, r, m in views]), 99.5))
    rows = []
    for f, c, ref, mask in views:
        tex, view = predict_view(model, cache, f, c)
        img = project_image(tex, view.lookup).numpy()
        rows.append({"frame": f.id, "camera": c, "kind": f.kind, "psnr": psnr_linear(ref, img, mask, peak)})
    ps = [r["psnr"] for r in rows if r["psnr"] == r["psnr"]]
    return {"psnr_mean": float(np.mean(ps)) if ps else None, "per_view": rows, "peak": peak, "views": len(rows)}


def validation_image(model, cache, items, path, peak):
    """captured | predicted | |error| rows (display transform of the harness) -> PNG."""
    from relit_hands.image_io import write_png
    from .eval_metrics import display_transform
    from .teacher_training import project_image

    rows = []
    for f, c in items:
        ref = cache.capture.image(f, c)
        mask = cache.capture.mask(f, c) > 0
        tex, view = predict_view(model, cache, f, c)
        img = project_image(tex, view.lookup).numpy() * mask[..., None]
        err = np.abs(img - ref * mask[..., None])
        row = np.concatenate([display_transform(ref, peak), display_transform(img, peak),
                              display_transform(err * 4, peak)], 1)
        rows.append(row)
    if rows:
        w = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in rows]
        write_png(path, (np.concatenate(rows, 0) * 255 + 0.5).clip(0, 255).astype(np.uint8))


def _plot_loss(csv_path: Path, png: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return
    steps, loss, vs, vp = [], [], [], []
    with open(csv_path) as fh:
        for r in csv.DictReader(fh):
            steps.append(int(r["step"]))
            loss.append(float(r["loss"]))
            if r.get("val_psnr"):
                vs.append(int(r["step"]))
                vp.append(float(r["val_psnr"]))
    if not steps:
        return
    fig, ax = plt.subplots(1, 2 if vp else 1, figsize=(10 if vp else 5, 3.5))
    ax = np.atleast_1d(ax)
    ax[0].plot(steps, loss, lw=0.8)
    if len(loss) > 20:
        k = max(5, len(loss) // 30)
        sm = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax[0].plot(steps[k - 1:], sm, lw=1.5)
    ax[0].set_xlabel("step"), ax[0].set_ylabel("loss"), ax[0].set_yscale("log")
    ax[0].set_title("training loss")
    if vp:
        ax[1].plot(vs, vp, "o-")
        ax[1].set_xlabel("step"), ax[1].set_ylabel("PSNR (dB)"), ax[1].set_title("held-out lit frames")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------ training

def _dist_setup(device: str):
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, False
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), True


def train(args, command: str | None = None) -> dict:
    from tqdm import tqdm

    from relit_hands.tools.capture import Capture, CaptureIncompleteError
    from relit_hands.engine import Engine
    from .teacher import TeacherNet, load_teacher, save_teacher
    from .teacher_inputs import TexelConditioning
    from .teacher_training import ViewCache, conditioning_for_frame, sample_textures, teacher_loss

    torch.set_num_threads(max(1, args.threads))
    device = "cuda" if (args.device == "auto" and torch.cuda.is_available()) else ("cpu" if args.device == "auto" else args.device)
    rank, world, distributed = _dist_setup(device)
    if device == "cuda":
        torch.cuda.set_device(rank % max(1, torch.cuda.device_count()))
    out = Path(args.out)
    t_start = time.time()
    # the run folder: new, empty, or a train-teacher run (resumed with --resume); never the capture
    folder = OutputFolder(out, "train-teacher", overwrite=getattr(args, "overwrite", False), inputs=[args.capture],
                          recognise=lambda p: (p / "log.csv").is_file() and (p / "checkpoints").is_dir())
    try:  # the capture is checked before anything is written
        capture = Capture.load(args.capture, check_files=not args.allow_partial)
    except CaptureIncompleteError as e:
        raise ValueError(f"{e}\n(the capture is not complete: finish it with relit-hands lightstage, or "
                         f"pass --allow-partial to train on the views rendered so far)") from None
    if rank == 0:
        folder.create()
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "val").mkdir(parents=True, exist_ok=True)
    coverage = None
    if args.allow_partial:
        coverage = rendered_views_only(capture)
        if rank == 0:
            print(f"train-teacher: partial capture: {coverage['views']} of {coverage['views_total']} lit views "
                  f"rendered ({coverage['frames_dropped']} lit frames without any are skipped)", flush=True)
    init_from = getattr(args, "init_from", None)
    resuming = args.resume and (out / "state.json").is_file()
    parent = load_teacher(init_from) if init_from and not resuming else None   # (model, metadata), read once
    parent_lights = parent[1].get("heldout_lights") if parent and args.holdout_lights is None else None
    split = split_frames(capture, args.holdout_poses, args.holdout_lights, args.seed,
                         fixed=run_split(out, capture) if args.resume else None, lights=parent_lights)
    train_frames = split["train"]
    if rank == 0:
        write_text_atomic(out / "split.json", json.dumps({k: split[k] for k in ("heldout_pose_keys", "heldout_lights")},
                                                         indent=1) + "\n")
    if not train_frames:
        raise ValueError(f"{args.capture}: no train-split OLAT / group frames to train on")
    from relit_hands.hand_model import asset_mismatch, asset_reference
    from .evaluate import capture_engine_kwargs

    engine = Engine(**capture_engine_kwargs(capture))   # the capture's hand asset (e.g. hand_v2)
    # reference distance: median light distance to the hands' wrists over the lit frames
    d = [np.linalg.norm(capture.light_intensities(f)[0] - np.mean([h.transl for h in f.scene.hands], 0), axis=1)
         for f in train_frames]
    d_ref = float(np.median(np.concatenate(d)))
    cond = TexelConditioning(engine, args.resolution, d_ref=d_ref, mean_free_path=args.translucency * 1e-3)
    cache = ViewCache(capture, engine, cond, denoise=args.denoise)

    state_path = out / "state.json"
    start_step = 0
    meta_extra = {}
    if parent:
        model, meta = parent
        model.train()
        if model.resolution != args.resolution:
            raise ValueError(f"--init-from {init_from}: a teacher of resolution {model.resolution}, "
                             f"--resolution is {args.resolution}")
        wrong = asset_mismatch(model.asset_ref, engine)
        if wrong:
            raise ValueError(f"--init-from {init_from}: the teacher was {wrong} (the capture {args.capture})")
        # its conditioning: the light distance it was trained with and its translucency channel
        d_ref = cond.d_ref = float(model.d_ref)
        cond.mean_free_path = model.mean_free_path
    if resuming:
        st = json.loads(state_path.read_text())
        model, meta = load_teacher(out / st["checkpoint"])
        model.train()
        cond.mean_free_path = model.mean_free_path  # the resumed run's channels, whatever the flags say
        start_step = int(st["step"])
        loss_scale = float(meta["loss_scale"])
    elif not init_from:
        model = TeacherNet(args.resolution, args.latent_channels, trunk_channels=args.trunk_channels,
                           head_channels=args.head_channels, d_ref=d_ref, albedo_prior=args.albedo_prior,
                           albedo=cond.asset.albedo_map(args.resolution) if args.albedo_prior else None,
                           specular_prior=args.specular_prior,
                           specular=cond.asset.specular_map(args.resolution) if args.specular_prior else None,
                           translucency_mfp=args.translucency * 1e-3)
    if args.learn_specular_alpha and not resuming:   # also on a teacher fine-tuned --init-from
        model.enable_learned_specular_alpha()
    if not resuming:
        # loss scale: mean reference hand-pixel radiance (OLAT medians can be 0: half the hand is unlit) over (a sample of) the training views
        rng = np.random.default_rng(args.seed)
        vals = []
        for f in [train_frames[i] for i in rng.choice(len(train_frames), min(8, len(train_frames)), replace=False)]:
            c = list(f.images)[0]
            vals.append(cache.view(f, c).target.numpy().ravel())
        loss_scale = float(max(np.mean(np.concatenate(vals)), 1e-6))
    if resuming:
        wrong = asset_mismatch(model.asset_ref, engine)
        if wrong:
            raise ValueError(f"{out}: the run's teacher was {wrong} (the capture {args.capture})")
    model.asset_ref = asset_reference(engine.asset.source)
    meta_extra = {"loss_scale": loss_scale, "loss": args.loss, "capture": str(args.capture), "d_ref": d_ref,
                  "heldout_lights": split["heldout_lights"], "resolution": args.resolution}
    if init_from:  # a resumed fine-tuning keeps saying where it started
        meta_extra["init_from"] = str(init_from)
    model = model.to(device)
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=None if device == "cpu" else [torch.cuda.current_device()])
    texel_params = ("latent", "spec_gain", "spec_log_alpha")  # per-texel parameters: the latent's learning rate
    latent = [p for n, p in model.named_parameters() if n in texel_params]
    others = [p for n, p in model.named_parameters() if n not in texel_params]
    opt = torch.optim.Adam([{"params": others, "lr": args.lr}, {"params": latent, "lr": args.latent_lr}])
    if args.resume and state_path.is_file():
        ost = out / (json.loads(state_path.read_text())["checkpoint"].replace(".safetensors", ".optim.pt"))
        if ost.is_file():
            opt.load_state_dict(torch.load(ost, weights_only=True))
    base_lrs = [args.lr, args.latent_lr]

    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            writer = SummaryWriter(str(out / "tb"))
        except Exception:
            writer = None
    csv_path = out / "log.csv"
    if rank == 0 and (not args.resume or not csv_path.is_file()):
        with open(csv_path, "w", newline="") as fh:
            csv.writer(fh).writerow(["step", "loss", "lr", "seconds", "val_psnr"])
    val_frames = split["val_pose"] + split["val_light"]
    val_items = []
    vr = random.Random(args.seed + 1)
    for f in (val_frames or train_frames)[: args.val_views]:
        val_items.append((f, vr.choice(list(f.images))))
    val_peak = None
    if val_frames:
        refs = [capture.image(f, c)[capture.mask(f, c) > 0] for f in val_frames for c in f.images]
        val_peak = float(np.percentile(np.concatenate(refs), 99.5))

    rng = random.Random(args.seed * 1000 + rank)
    losses = []
    last_val = None
    bar = tqdm(total=args.steps, initial=start_step, desc="train-teacher", unit="step",
               disable=args.no_progress or rank != 0)

    def checkpoint(step):
        name = f"checkpoints/step_{step:07d}.safetensors"
        save_teacher(model, out / name, {**meta_extra, "step": step})
        torch.save(opt.state_dict(), out / name.replace(".safetensors", ".optim.pt"))
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step, "checkpoint": name}))
        tmp.replace(state_path)

    step = start_step
    for step in range(start_step + 1, args.steps + 1):
        frac = (step - 1) / max(1, args.steps)
        for g, b in zip(opt.param_groups, base_lrs):
            g["lr"] = b * 0.5 * (1 + math.cos(math.pi * frac)) * min(1.0, step / 50)
        f = rng.choice(train_frames)
        cams = rng.sample(list(f.images), min(args.cams, len(f.images)))
        views = [cache.view(f, c) for c in cams]
        parts = [conditioning_for_frame(cache, f, v.camera_centre) for v in views]
        geo = parts[0][0]
        k = parts[0][1].shape[1]
        cond = torch.cat([p[1] for p in parts], 1).to(device)
        fall = torch.cat([p[2] for p in parts], 1).to(device)
        inten = torch.cat([p[3] for p in parts], 0).to(device)
        tex = net(cond, fall, inten, geo.pose.to(device), geo.valid.to(device))        # [H, n*k, 3, R, R]
        H = tex.shape[0]
        tex = tex.reshape(H, len(views), k, 3, args.resolution, args.resolution).sum(2)
        preds = [sample_textures(tex[:, i], v.train) for i, v in enumerate(views)]
        pred = torch.cat(preds)
        target = torch.cat([v.target for v in views]).to(device)
        loss = teacher_loss(pred, target, loss_scale, args.loss)
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteError(f"train-teacher: the loss became {float(loss.detach())} at step {step} "
                                 f"(try a lower --lr); training stopped, no weights were written for this step")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if not all(bool(torch.isfinite(q).all()) for q in model.parameters()):
            raise NonFiniteError(f"train-teacher: the weights became NaN/infinite at step {step} (try a lower --lr); "
                                 f"training stopped, no weights were written for this step")
        lv = float(loss.detach())
        losses.append(lv)
        bar.update(1)
        bar.set_postfix(loss=f"{lv:.4f}", frame=f.id)
        val_psnr = ""
        if rank == 0 and (step % args.val_every == 0 or step == args.steps):
            model.eval()
            if val_frames:
                ev = evaluate_frames(model, cache, val_frames, peak=val_peak)
                last_val = ev["psnr_mean"]
                val_psnr = f"{last_val:.3f}" if last_val is not None else ""
                if writer is not None and last_val is not None:
                    writer.add_scalar("val/psnr", last_val, step)
            validation_image(model, cache, val_items, out / "val" / f"step_{step:07d}.png",
                             val_peak or loss_scale * 20)
            model.train()
        if rank == 0 and (step % args.log_every == 0 or val_psnr or step == args.steps):
            with open(csv_path, "a", newline="") as fh:
                csv.writer(fh).writerow([step, f"{np.mean(losses[-args.log_every:]):.6f}",
                                         f"{opt.param_groups[0]['lr']:.3e}", f"{time.time() - t_start:.1f}", val_psnr])
            if writer is not None:
                writer.add_scalar("train/loss", lv, step)
        if rank == 0 and (step % args.ckpt_every == 0 or step == args.steps):
            checkpoint(step)
            _plot_loss(csv_path, out / "loss_curve.png")
    bar.close()

    summary = {}
    if rank == 0:
        model.eval()
        save_teacher(model, out / "teacher.safetensors", {**meta_extra, "step": step})  # atomic (temporary name)
        _plot_loss(csv_path, out / "loss_curve.png")
        ev_pose = evaluate_frames(model, cache, split["val_pose"], peak=val_peak)
        ev_light = evaluate_frames(model, cache, split["val_light"], peak=val_peak)
        sub = train_frames[: max(1, min(4, len(train_frames)))]
        ev_train = evaluate_frames(model, cache, sub, peak=val_peak)
        first = float(np.mean(losses[: min(20, len(losses))])) if losses else None
        lastl = float(np.mean(losses[-min(20, len(losses)):])) if losses else None
        summary = {
            "tool": "relit-hands train-teacher",
            "command": command or " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "capture": str(args.capture), "capture_coverage": coverage,
            "out": str(out), "steps": step, "resumed_from": start_step,
            "world_size": world, "device": device, "resolution": args.resolution,
            "frames": {"train": len(train_frames), "val_pose": len(split["val_pose"]),
                       "val_light": len(split["val_light"])},
            "heldout_lights": split["heldout_lights"], "heldout_pose_keys": split["heldout_pose_keys"],
            "loss_scale": loss_scale, "d_ref": d_ref, "loss_first20": first, "loss_last20": lastl,
            "psnr_peak": val_peak,
            "olat_psnr_heldout_poses": ev_pose["psnr_mean"], "olat_psnr_heldout_lights": ev_light["psnr_mean"],
            "olat_psnr_train_frames": ev_train["psnr_mean"],
            "per_view": {"heldout_poses": ev_pose["per_view"], "heldout_lights": ev_light["per_view"]},
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "weights_bytes": (out / "teacher.safetensors").stat().st_size,
            "wall_seconds": time.time() - t_start, "torch": torch.__version__, "python": platform.python_version(),
        }
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
        if writer is not None:
            writer.close()
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return summary


def run_from_args(args, command: str | None = None) -> int:
    s = train(args, command)
    if s:
        print(json.dumps({k: s[k] for k in ("steps", "loss_first20", "loss_last20", "olat_psnr_heldout_poses",
                                             "olat_psnr_heldout_lights", "olat_psnr_train_frames")}, indent=1))
    return 0


def main(argv=None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
