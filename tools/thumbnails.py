"""Draws the thumbnail of every example workflow: a .jpg with the workflow's stem next to it, as
ComfyUI's template browser expects. The picture is the graph itself (nodes where the workflow puts
them, coloured by role, links as curves) under the family and method, and the keyframed boxes of
its BBox Trajectory drawn as a little storyboard -- so a thumbnail says what the workflow does
without anything being downloaded or run.

    python -m tools.thumbnails [example_workflows/*.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
SIZE = (640, 400)
BG = (32, 34, 40)
ROLE_COLOURS = [  # (predicate on the node type, fill)
    (lambda t: t.startswith("BoxDirector."), (214, 128, 48)),
    (lambda t: "Loader" in t or t.startswith("Load"), (70, 110, 160)),
    (lambda t: "Sampler" in t or "Scheduler" in t or "Guid" in t, (120, 90, 160)),
    (lambda t: "Encode" in t or "Conditioning" in t or t.startswith("Primitive"), (170, 140, 70)),
    (lambda t: t in ("Note", "MarkdownNote"), (110, 90, 60)),
    (lambda t: True, (80, 85, 95)),
]
OBJECT_COLOURS = [(240, 90, 80), (80, 170, 250), (120, 220, 120), (250, 210, 80)]


def font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def role_colour(node_type: str):
    return next(c for pred, c in ROLE_COLOURS if pred(node_type))


def short(node: dict) -> str:
    name = node.get("title") or node["type"]
    return name.replace("BoxDirector.", "").replace("CheckpointLoaderSimple", "Checkpoint")[:22]


def draw(workflow: dict, title: str, subtitle: str) -> Image.Image:
    img = Image.new("RGB", SIZE, BG)
    d = ImageDraw.Draw(img)
    d.text((16, 12), title, fill=(240, 240, 240), font=font(22))
    d.text((16, 40), subtitle, fill=(214, 160, 100), font=font(15))

    # The graph, scaled into the lower left area.
    nodes = workflow["nodes"]
    area = (16, 72, 452, SIZE[1] - 14)
    xs = [n["pos"][0] for n in nodes] + [n["pos"][0] + n.get("size", [300, 100])[0] for n in nodes]
    ys = [n["pos"][1] for n in nodes] + [n["pos"][1] + n.get("size", [300, 100])[1] for n in nodes]
    sx = (area[2] - area[0]) / max(1, max(xs) - min(xs))
    sy = (area[3] - area[1]) / max(1, max(ys) - min(ys))
    s = min(sx, sy)

    def at(x, y):
        return area[0] + (x - min(xs)) * s, area[1] + (y - min(ys)) * s

    by_id = {n["id"]: n for n in nodes}
    for link in workflow.get("links", []):
        src, dst = by_id.get(link[1]), by_id.get(link[3])
        if not src or not dst:
            continue
        x0, y0 = at(src["pos"][0] + src.get("size", [300])[0], src["pos"][1] + 20 + 22 * link[2])
        x1, y1 = at(dst["pos"][0], dst["pos"][1] + 20 + 22 * link[4])
        pts = [(x0 + (x1 - x0) * t, y0 + (y1 - y0) * (3 * t * t - 2 * t * t * t)) for t in [i / 12 for i in range(13)]]
        d.line(pts, fill=(150, 150, 160), width=1)
    f = font(11)
    for n in nodes:
        x0, y0 = at(*n["pos"])
        x1, y1 = at(n["pos"][0] + n.get("size", [300, 100])[0], n["pos"][1] + n.get("size", [300, 100])[1])
        d.rounded_rectangle((x0, y0, x1, y1), radius=4, fill=role_colour(n["type"]), outline=(20, 20, 20))
        d.text((x0 + 4, y0 + 3), short(n), fill=(255, 255, 255), font=f)

    # The boxes of the (first) BBox Trajectory: first keyframe outlined, last filled, path between.
    trajs = [n for n in nodes if n["type"] == "BoxDirector.BBoxTrajectory"]
    # An edit workflow shows the boxes of the edit, not those its source video was made with.
    traj = next((n for n in trajs if n.get("title") == "Edit boxes"), trajs[0] if trajs else None)
    panel = (468, 100, 624, 100 + 156 * 0.75)
    if traj:
        doc = json.loads(traj["widgets_values"][0])
        aspect = doc["height"] / doc["width"]
        pw = panel[2] - panel[0]
        ph = pw * aspect
        box = (panel[0], panel[1], panel[2], panel[1] + ph)
        d.rectangle(box, fill=(60, 64, 72), outline=(200, 200, 200))
        d.text((panel[0], panel[1] - 18), f"{doc['frames']} frames {doc['width']}x{doc['height']}",
               fill=(220, 220, 220), font=font(12))
        for i, obj in enumerate(doc["objects"]):
            c = OBJECT_COLOURS[i % len(OBJECT_COLOURS)]
            kfs = obj["keyframes"]

            def rect(b):
                return (box[0] + b[0] * pw, box[1] + b[1] * ph, box[0] + b[2] * pw, box[1] + b[3] * ph)

            first, last = rect(kfs[0]["box"]), rect(kfs[-1]["box"])
            d.rectangle(first, outline=c, width=2)
            d.rectangle(last, fill=tuple(v // 2 for v in c), outline=c, width=2)
            d.line([((first[0] + first[2]) / 2, (first[1] + first[3]) / 2),
                    ((last[0] + last[2]) / 2, (last[1] + last[3]) / 2)], fill=c, width=2)
            d.text((panel[0], box[3] + 6 + 16 * i), f"{obj['id']}: {obj.get('prompt') or obj['id']}", fill=c,
                   font=font(12))
    return img


def titles(path: Path, workflow: dict) -> tuple[str, str]:
    from .example_workflows import FAMILIES, METHODS

    for fam_key, fam in FAMILIES.items():
        for method, mname in METHODS.items():
            if path.stem == f"{fam_key}_{method}":
                return fam["title"].split(" (")[0], mname.split(" (")[0] + (" (PEEKABOO)" if method == "masked_attention" else "")
    return path.stem.replace("_", " "), "Box Director"


def main(argv=None) -> None:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])] or sorted(
        (ROOT / "example_workflows").glob("*.json"))
    for path in paths:
        workflow = json.loads(path.read_text())
        img = draw(workflow, *titles(path, workflow))
        out = path.with_suffix(".jpg")
        img.save(out, quality=88)
        print(out)


if __name__ == "__main__":
    main()
