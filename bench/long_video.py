"""Long videos on the toy world: identity drift across chunks and mIoU along one long trajectory,
with and without first-frame sharing.

    python -m bench.long_video [--seeds 6] [--length 49] [--steps 20] [--out out/bench_long_video.json]

The toy Wan model's native length is 17 pixel frames (5 latent frames); ``--length 49`` is 3x
that (13 latent frames -> 4 chunks with 1 overlap frame and the anchor). One object ("a red
circle" etc.; red, blue, yellow, white in turn: the colours the toy VAE can draw) follows a
zig-zag trajectory over the whole video; the LongVideoChunks node generates it through
ComfyUI's own sampler, steered per chunk by the chunk's slice of the boxes (MaskedAttentionPatch's
rule, self- and cross-attention, for the first ``--box-end`` of the steps;
``--no-cross``: self-attention only). Configurations:

* ``plain``        -- chunks continue the previous chunk's last latent frame only; no anchor frame,
  no first-frame sharing (the usual autoregressive extension);
* ``anchor``       -- + the first chunk's first latent frame in front of every chunk (kept fixed);
* ``anchor+share`` -- + first-frame sharing, anchor mode (each frame attends its own frame and the
  first only) in every self-attention call;
* ``anchor+add_first`` -- + first-frame sharing, add_first mode (full attention, frame 0's K/V
  appended once more: log 2 on its keys);
* ``anchor+eq8`` -- + Eq. 8 shared noise: each chunk after the first mixes its encoded first frame
  (the anchor latent) into its later frames' noise, alpha 0.2, unit variance kept;
* ``anchor+add_first+eq8`` -- both.

Seconds per video are printed next to the quality (one chunked video; the toy world on CPU).

Per video, from the decoded frames: mIoU of the largest blob of the prompted colour against the
box over all frames (bench.quality's scorer); per chunk (its new pixel frames) the dominant toy
colour, the blob's shape and the mean RGB of the object's pixels. Identity drift = share of later
chunks whose colour (or shape) differs from the first chunk's, and the mean RGB distance of later
chunks' object to the first chunk's. The toy DiT is under-trained (toyworld/README.md): figures
are reported as measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402

harness.import_pack()
from boxdirector.core import long_video as lv  # noqa: E402
from boxdirector.core import token_layout  # noqa: E402
from boxdirector.core.masks import box_masks  # noqa: E402
from boxdirector.core.regions import Regions  # noqa: E402
from boxdirector.core.trajectory import parse_trajectory, sample_boxes  # noqa: E402

from bench.quality import found_boxes, score_object  # noqa: E402
from toyworld import data, sanity  # noqa: E402

DRAWABLE = [data.COLORS.index(c) for c in ("red", "blue", "yellow", "white")]
# name: (anchor_first_frame, first-frame share mode or None, Eq. 8 noise share)
CONFIGS = {"plain": (False, None, 0.0), "anchor": (True, None, 0.0), "anchor+share": (True, "anchor", 0.0),
           "anchor+add_first": (True, "add_first", 0.0), "anchor+eq8": (True, None, 0.2),
           "anchor+add_first+eq8": (True, "add_first", 0.2)}


def zigzag(length: int, prompt: str, size: int = data.SIZE, legs: int = 4, box: float = 0.34) -> dict:
    """A box zig-zagging left-right while descending, ``legs`` straight legs over ``length`` frames."""
    keys = []
    for i in range(legs + 1):
        x = 0.04 if i % 2 == 0 else 1 - 0.04 - box
        y = 0.04 + (1 - 0.08 - box) * i / legs
        keys.append({"frame": round(i * (length - 1) / legs), "box": [x, y, x + box, y + box]})
    return {"version": 1, "frames": length, "width": size, "height": size,
            "objects": [{"id": "obj", "prompt": prompt, "keyframes": keys}]}


def chunk_identity(video, color, chunks, total_latent) -> list:
    """Per chunk: dominant colour index, blob shape index, mean RGB of the prompted colour's blob."""
    out = []
    for ch in chunks:
        px = sorted({p for g in ch.new if g < total_latent for p in token_layout.pixel_frames_of_latent("wan21", g)})
        px = [p for p in px if p < video.shape[0]]
        clip = video[px]
        got_color, _ = sanity.classify_color(clip)
        shapes, rgbs = [], []
        for f in range(clip.shape[0]):
            blob = sanity.largest_component(data.color_presence(clip[f], data.COLORS[color], 0.3))
            s, _ = sanity.blob_shape(blob)
            if s is not None:
                shapes.append(s)
            if blob.sum() > 0:
                rgbs.append(clip[f][blob].mean(0))
        shape = max(set(shapes), key=shapes.count) if shapes else None
        rgb = torch.stack(rgbs).mean(0).tolist() if rgbs else None
        out.append({"color": got_color, "shape": shape, "rgb": rgb})
    return out


def drift(ident: list) -> dict:
    first, later = ident[0], ident[1:]
    dist = [sum((a - b) ** 2 for a, b in zip(c["rgb"], first["rgb"])) ** 0.5
            for c in later if c["rgb"] is not None and first["rgb"] is not None]
    return {"color_changed": sum(c["color"] != first["color"] for c in later) / max(1, len(later)),
            "shape_changed": sum(c["shape"] != first["shape"] for c in later) / max(1, len(later)),
            "rgb_dist": statistics.mean(dist) if dist else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--length", type=int, default=3 * (data.FRAMES - 1) + 1, help="pixel frames (3x native: 49)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=sanity.DEFAULTS["cfg"])
    ap.add_argument("--sampler", default=sanity.DEFAULTS["sampler"])
    ap.add_argument("--box-end", type=float, default=0.3)
    ap.add_argument("--overlap", type=int, default=1)
    ap.add_argument("--no-cross", dest="cross", action="store_false",
                    help="mask self-attention only (no clip / prompt given to the node)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", default="out/bench_long_video.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    nodes, model, vae, clip = sanity.load_models(shift=3.0)
    harness.load_pack_nodes()
    latent = {"samples": torch.zeros(1, 16, token_layout.latent_frames("wan21", data.FRAMES),
                                     data.SIZE // 8, data.SIZE // 8)}
    total = token_layout.latent_frames("wan21", args.length)
    rows = []
    t0 = time.time()
    for s in range(args.seeds):
        # The colours the shipped toy VAE can draw (it decodes green as grey, toyworld/README.md):
        # a drift measure on an object that is never drawn measures nothing.
        color = DRAWABLE[s % len(DRAWABLE)]
        shape = s % len(data.SHAPES)
        prompt = data.caption_for([color], [shape])
        doc = zigzag(args.length, prompt)
        boxes, vis = sample_boxes(parse_trajectory(json.dumps(doc)))
        regions = Regions(box_masks(boxes, vis, data.SIZE, data.SIZE), ("obj",), (prompt,))
        (pos,) = nodes.CLIPTextEncode().encode(clip, prompt)
        (neg,) = nodes.CLIPTextEncode().encode(clip, "")
        for name in args.configs.split(","):
            anchor, share, alpha = CONFIGS[name]
            t1 = time.time()
            (out,) = harness.run_node(
                "BoxDirector.LongVideoChunks", model=model, positive=pos, negative=neg, latent=latent,
                length=args.length, overlap=args.overlap, anchor_first_frame=anchor, first_frame_share=share is not None,
                share_mode=share or "add_first", share_strength=1.0, noise_share=alpha, seed=100 + s,
                steps=args.steps, cfg=args.cfg, sampler_name=args.sampler,
                scheduler="simple", regions=regions, box_end_percent=args.box_end,
                **({"clip": clip, "prompt": prompt} if args.cross else {})).result
            secs = time.time() - t1
            (images,) = nodes.VAEDecode().decode(vae, out)
            video = images.reshape(-1, *images.shape[-3:])[: args.length]
            score = score_object(found_boxes(video, data.COLORS[color]), boxes[0][: video.shape[0]], data.SIZE)
            chunks = lv.plan_chunks(total, latent["samples"].shape[2], args.overlap, anchor)
            ident = chunk_identity(video, color, chunks, total)
            row = {"seed": s, "prompt": prompt, "config": name, "chunks": len(chunks), "frames": video.shape[0],
                   "miou": score["miou"], "found": score["found"], "seconds": secs, **drift(ident),
                   "first_chunk_color_ok": ident[0]["color"] == color, "identity": ident}
            rows.append(row)
            rd = "-" if row["rgb_dist"] is None else f"{row['rgb_dist']:.3f}"
            print(f"seed {s} {prompt:16s} {name:20s} {secs:5.1f}s chunks {len(chunks)} mIoU {row['miou']:.3f} found "
                  f"{row['found']:.2f} colour-drift {row['color_changed']:.2f} shape-drift "
                  f"{row['shape_changed']:.2f} rgb-dist {rd}  ({time.time() - t0:.0f}s)", flush=True)
    summary = {}
    for name in args.configs.split(","):
        rs = [r for r in rows if r["config"] == name]
        dists = [r["rgb_dist"] for r in rs if r["rgb_dist"] is not None]
        summary[name] = {"miou": statistics.mean(r["miou"] for r in rs),
                         "color_changed": statistics.mean(r["color_changed"] for r in rs),
                         "shape_changed": statistics.mean(r["shape_changed"] for r in rs),
                         "rgb_dist": statistics.mean(dists) if dists else None, "videos": len(rs),
                         "seconds": statistics.mean(r["seconds"] for r in rs)}
    print(f"\n{'config':21s} {'mIoU':>6s} {'colour drift':>13s} {'shape drift':>12s} {'rgb dist':>9s} {'s/video':>8s}  "
          f"(length {args.length} px frames = {total} latent, seeds {args.seeds})")
    for name, s in summary.items():
        rd = "-" if s["rgb_dist"] is None else f"{s['rgb_dist']:.3f}"
        print(f"{name:21s} {s['miou']:6.3f} {s['color_changed']:13.2f} {s['shape_changed']:12.2f} {rd:>9s} "
              f"{s['seconds']:8.1f}")
    result = {"bench": "long video (toy world)", "args": vars(args), "summary": summary, "rows": rows,
              "seconds": round(time.time() - t0, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
