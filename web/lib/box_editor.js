// Box Director: the box editor (framework-free DOM + 2D canvas).
//
// A pure module: it exports the BoxEditor class and has no side effects on import (ComfyUI
// loads every .js under web/ as an extension). web/bbox_editor.js puts it on the BBoxTrajectory
// node through addDOMWidget and hands it a `host` (see BoxEditor's constructor).
//
// The only state that matters is the Trajectory text in the node's STRING widget: every edit
// writes canonical JSON there (host.writeText), and any text that arrives from outside (a loaded
// workflow, a hand edit) is read back (load()). Undo/redo is a stack of those texts.

import {
  EASES, TrajectoryError, cloneDoc, easeCurve, objectColorCss, parseTrajectory, prepareObject, toCanonicalJSON,
  validateDoc,
} from "./trajectory.js";

const MIN_SIZE = 0.005; // smallest box side (fraction of the frame)
const HANDLE = 6; // handle half-size / hit radius in CSS pixels
const DRAG_THRESHOLD = 3; // pixels before a press becomes a drag
const FPS = 16;
const MAX_UNDO = 200;
const EASE_SHORT = { linear: "lin", ease_in: "in", ease_out: "out", ease_in_out: "in-out", hold: "hold", smooth: "smooth" };
const ALL_PARTS = ["stage", "timeline", "panel", "status", "chips"];
const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
const CURSORS = { nw: "nwse-resize", se: "nwse-resize", ne: "nesw-resize", sw: "nesw-resize", n: "ns-resize",
                  s: "ns-resize", e: "ew-resize", w: "ew-resize" };

const r4 = (v) => Math.round(v * 1e4) / 1e4;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

export const SHORTCUTS = [
  ["Drag on empty frame", "draw a new object"],
  ["Drag a box / its handles", "move / resize it (adds a keyframe at this frame)"],
  ["Ctrl+Z, Ctrl+Shift+Z / Ctrl+Y", "undo, redo"],
  ["K", "keyframe the selected object at this frame"],
  ["Delete / Backspace", "delete the selected object's keyframe at this frame"],
  ["Shift+Delete", "delete the selected object"],
  ["H", "hide / show the selected object from this frame"],
  ["E / Shift+E", "next / previous ease of the segment at this frame"],
  ["Arrows (Shift: x10)", "nudge the selected box by one pixel"],
  [", / . (Shift: x10)", "previous / next frame"],
  ["[ / ]", "previous / next keyframe"],
  ["Home / End", "first / last frame"],
  ["Tab / Shift+Tab", "select the next / previous object"],
  ["Space", "play / pause"],
  ["Ctrl+C / Ctrl+V", "copy the document / paste a document or an image (background)"],
  ["Escape", "deselect, stop playing"],
];

const CSS = `
.bdx-root{display:flex;flex-direction:column;width:100%;height:100%;min-height:360px;box-sizing:border-box;
  background:#17181c;color:#d8d8dc;font:12px/1.3 system-ui,-apple-system,"Segoe UI",sans-serif;border-radius:6px;
  overflow:hidden;position:relative;user-select:none;-webkit-user-select:none;border:1px solid #2c2e35}
.bdx-root:focus-within{border-color:#4f7fd6}
.bdx-root *{box-sizing:border-box}
.bdx-keys{position:absolute;left:0;top:0;width:1px;height:1px;opacity:0;padding:0;border:0;resize:none;overflow:hidden;
  pointer-events:none}
.bdx-bar{display:flex;flex-wrap:nowrap;align-items:center;gap:4px;padding:4px 6px;flex:0 0 auto;overflow:hidden}
.bdx-bar.bdx-top{border-bottom:1px solid #2a2c33}
.bdx-btn{background:#2a2d35;color:#ddd;border:1px solid #3a3e48;border-radius:4px;padding:2px 6px;font:inherit;
  cursor:pointer;white-space:nowrap;line-height:16px}
.bdx-btn:hover{background:#343844}
.bdx-btn:disabled{opacity:.4;cursor:default}
.bdx-btn.bdx-on{background:#35507e;border-color:#4f7fd6}
.bdx-chips{display:flex;flex-wrap:wrap;gap:3px;flex:1 1 auto;min-width:60px}
.bdx-chip{display:flex;align-items:center;gap:4px;background:#23252c;border:1px solid #363945;border-radius:10px;
  padding:1px 8px 1px 4px;cursor:pointer;max-width:140px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bdx-chip.bdx-sel{border-color:#e8e8e8;background:#30333c}
.bdx-dot{width:10px;height:10px;border-radius:50%;flex:0 0 auto}
.bdx-stage{position:relative;flex:1 1 auto;min-height:100px;background:#0f1013}
.bdx-stage canvas,.bdx-tl canvas{position:absolute;left:0;top:0;width:100%;height:100%;touch-action:none;display:block}
.bdx-tl{position:relative;flex:0 0 auto;background:#1d1f25;border-top:1px solid #2a2c33}
.bdx-grid{display:grid;grid-template-columns:auto 1fr;gap:3px 6px;padding:4px 6px;align-items:center;flex:0 0 auto;
  border-top:1px solid #2a2c33}
.bdx-grid label{color:#9a9ca6}
.bdx-row{display:flex;flex-wrap:nowrap;gap:4px;align-items:center;min-width:0;overflow:hidden}
.bdx-row>span{white-space:nowrap}
.bdx-px{flex:1 1 0;min-width:0;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.bdx-in{background:#101115;color:#e6e6e6;border:1px solid #363945;border-radius:3px;padding:1px 4px;font:inherit;
  min-width:0;user-select:text;-webkit-user-select:text}
.bdx-in:focus{outline:none;border-color:#4f7fd6}
.bdx-in[type=number]{-moz-appearance:textfield;appearance:textfield}
.bdx-in[type=number]::-webkit-inner-spin-button,.bdx-in[type=number]::-webkit-outer-spin-button{-webkit-appearance:none;margin:0}
.bdx-in.bdx-num{width:64px}
.bdx-in.bdx-int{width:58px}
.bdx-in.bdx-frame{width:48px}
.bdx-vis{display:flex;align-items:center;gap:2px;white-space:nowrap}
.bdx-in.bdx-bad{border-color:#d65a5a}
.bdx-sel-in{background:#101115;color:#e6e6e6;border:1px solid #363945;border-radius:3px;font:inherit;padding:1px 2px}
.bdx-muted{color:#8a8c96}
.bdx-status{padding:3px 6px;min-height:40px;max-height:84px;flex:0 0 auto;border-top:1px solid #2a2c33;color:#9a9ca6;
  white-space:pre-wrap;word-break:break-word;user-select:text;-webkit-user-select:text;overflow:auto}
.bdx-status .bdx-err{color:#ff7b7b}
.bdx-status .bdx-warn{color:#e6c25a}
.bdx-json{display:none;flex-direction:column;gap:4px;padding:4px 6px;border-top:1px solid #2a2c33;flex:0 1 auto;
  min-height:64px;overflow:hidden}
.bdx-json.bdx-open{display:flex}
.bdx-json textarea{width:100%;height:130px;flex:1 1 auto;min-height:30px;font:11px/1.35 ui-monospace,Menlo,Consolas,monospace;background:#101115;
  color:#e6e6e6;border:1px solid #363945;border-radius:3px;resize:vertical;user-select:text;-webkit-user-select:text}
.bdx-drop{position:absolute;inset:0;border:2px dashed #4f7fd6;background:rgba(79,127,214,.12);display:none;
  align-items:center;justify-content:center;color:#cfe0ff;font-size:14px;pointer-events:none}
.bdx-root.bdx-dragover .bdx-drop{display:flex}
`;

function injectCss() {
  if (document.getElementById("bdx-editor-css")) return;
  const style = document.createElement("style");
  style.id = "bdx-editor-css";
  style.textContent = CSS;
  document.head.appendChild(style);
}

function h(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of [].concat(children)) if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}

function emptyDoc() {
  return { version: 1, frames: 81, width: 832, height: 480, objects: [] };
}

/** Keyframe times for a new frame count, the backend's rule (core/trajectory.py with_overrides):
 * f' = round-half-up(f * (F'-1) / (F-1)). Returns null when two keyframes of one object collide. */
export function rescaleFrames(doc, frames) {
  const old = doc.frames;
  const out = cloneDoc(doc);
  out.frames = frames;
  for (const o of out.objects) {
    const seen = new Set();
    for (const kf of o.keyframes) {
      const f = old === 1 ? 0 : Math.floor((2 * kf.frame * (frames - 1) + (old - 1)) / (2 * (old - 1)));
      if (seen.has(f)) return null;
      seen.add(f);
      kf.frame = f;
    }
  }
  return out;
}

export class BoxEditor {
  /**
   * host: {
   *   readText() -> string            the trajectory widget's text
   *   writeText(text)                 store new text in the widget (the only persistent state)
   *   overrides() -> {frames, width, height}   the node's override widgets (0 = document's)
   *   background(frame) -> {image, label} | null   an HTMLImageElement (or null) to draw under the boxes
   *   uploadBackground(file) -> Promise  store a pasted/dropped/chosen image as the background
   *   clearBackground()               forget the stored background
   *   linked() -> bool                the trajectory input is driven by a link (read-only)
   *   focused()                       the editor took keyboard focus
   * }
   */
  constructor(host) {
    injectCss();
    this.host = host;
    this.doc = emptyDoc();
    this.prepared = [];
    this.text = null;
    this.error = null; // TrajectoryError of the current text (or of the edited doc)
    this.backendError = null; // message from the server's validation / execution
    this.notice = null;
    this.frame = 0;
    this.selected = -1;
    this.undoStack = [];
    this.redoStack = [];
    this.drag = null;
    this.playing = false;
    this.jsonOpen = false;
    this.showHelp = false;
    this._raf = 0;
    this._dirty = new Set();
    this._build();
    this.load(host.readText(), { resetHistory: true });
  }

  // ----------------------------------------------------------------------------------------
  // State: text <-> doc, history

  /** Read text that arrived from outside (workflow load, hand edit, another extension). */
  load(text, { resetHistory = false } = {}) {
    text = String(text ?? "");
    if (resetHistory) {
      this.undoStack = [];
      this.redoStack = [];
    } else if (text === this.text) {
      return;
    } else if (this.text !== null) {
      this._pushUndo(this.text);
    }
    this._applyText(text);
  }

  _applyText(text) {
    this.text = text;
    try {
      this.doc = parseTrajectory(text);
      this.error = null;
    } catch (e) {
      if (!(e instanceof TrajectoryError)) throw e;
      this.error = e;
      // Keep showing the last good document (or an empty one); an edit replaces the bad text.
      try {
        const data = JSON.parse(text);
        if (data && Number.isInteger(data.frames) && Number.isInteger(data.width) && Number.isInteger(data.height) &&
            Array.isArray(data.objects) && data.objects.length === 0) {
          this.doc = { version: 1, frames: data.frames, width: data.width, height: data.height, objects: [] };
        }
      } catch { /* keep the previous doc */ }
    }
    this.backendError = null;
    this._docChanged();
  }

  _pushUndo(text) {
    this.undoStack.push(text);
    if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
    this.redoStack = [];
  }

  /** Write the edited doc: canonical JSON into the widget, one undo step. */
  commit() {
    const text = toCanonicalJSON(this.doc);
    if (text === this.text) {
      this._docChanged();
      return false;
    }
    this._pushUndo(this.text);
    this.text = text;
    this.error = validateDoc(this.doc);
    this.backendError = null;
    this.host.writeText(text);
    this._docChanged();
    return true;
  }

  /** Replace the text as typed (JSON panel): one undo step; errors are shown, not fixed. */
  commitText(text) {
    if (text === this.text) return;
    this._pushUndo(this.text);
    this._applyText(text);
    this.host.writeText(text);
  }

  undo() {
    if (this.drag || !this.undoStack.length) return false;
    this.redoStack.push(this.text);
    const text = this.undoStack.pop();
    this._applyText(text);
    this.host.writeText(text);
    return true;
  }

  redo() {
    if (this.drag || !this.redoStack.length) return false;
    this.undoStack.push(this.text);
    const text = this.redoStack.pop();
    this._applyText(text);
    this.host.writeText(text);
    return true;
  }

  setBackendError(message) {
    this.backendError = message || null;
    this.invalidate("status");
  }

  _docChanged() {
    this.prepared = this.doc.objects.map(prepareObject);
    this.frame = clamp(this.frame, 0, this.doc.frames - 1);
    if (this.selected >= this.doc.objects.length) this.selected = this.doc.objects.length - 1;
    this.invalidate();
  }

  _refreshObject(i) {
    this.prepared[i] = prepareObject(this.doc.objects[i]);
  }

  get readOnly() {
    return !!this.host.linked?.();
  }

  // ----------------------------------------------------------------------------------------
  // Queries

  sizePx() {
    const o = this.host.overrides?.() || {};
    return [o.width > 0 ? o.width : this.doc.width, o.height > 0 ? o.height : this.doc.height];
  }

  boxAt(i, frame = this.frame) {
    return this.prepared[i]?.boxAt(frame) ?? null;
  }

  keyIndexAt(i, frame = this.frame) {
    return this.doc.objects[i]?.keyframes.findIndex((k) => k.frame === frame) ?? -1;
  }

  /** The keyframe whose segment holds this frame (the last at or before it; else the first). */
  segmentKey(i, frame = this.frame) {
    const kfs = this.doc.objects[i]?.keyframes;
    if (!kfs?.length) return -1;
    let k = 0;
    kfs.forEach((kf, j) => {
      if (kf.frame <= frame) k = j;
    });
    return k;
  }

  // ----------------------------------------------------------------------------------------
  // Edits (each ends with commit(), except the live parts of a drag)

  _uniqueId() {
    const ids = new Set(this.doc.objects.map((o) => o.id));
    for (let k = 0; ; k++) if (!ids.has(`obj${k}`)) return `obj${k}`;
  }

  addObject(box) {
    if (this.readOnly) return;
    if (!box) {
      const n = this.doc.objects.length;
      const off = (n % 5) * 0.06;
      box = [0.3 + off, 0.3 + off * 0.5, 0.55 + off, 0.65 + off * 0.5].map(r4);
    }
    const id = this._uniqueId();
    this.doc.objects.push({ id, prompt: id, keyframes: [{ frame: this.frame, box: box.map(r4), ease: "linear", visible: true }] });
    this.selected = this.doc.objects.length - 1;
    this.commit();
  }

  deleteObject(i = this.selected) {
    if (this.readOnly || !this.doc.objects[i]) return;
    this.doc.objects.splice(i, 1);
    this.selected = Math.min(i, this.doc.objects.length - 1);
    this.commit();
  }

  clearObjects() {
    if (this.readOnly || !this.doc.objects.length) return;
    this.doc.objects = [];
    this.selected = -1;
    this.commit();
  }

  /** Set object i's box at a frame, keyframing it there (live: no commit). Returns the index. */
  _setBoxLive(i, frame, box) {
    const o = this.doc.objects[i];
    let k = o.keyframes.findIndex((kf) => kf.frame === frame);
    if (k < 0) {
      const seg = this.segmentKey(i, frame);
      const prev = o.keyframes[seg];
      const before = frame < o.keyframes[0].frame;
      const kf = { frame, box: box.map(r4), ease: prev ? prev.ease : "linear",
                   visible: before ? o.keyframes[0].visible : prev ? prev.visible : true };
      k = before ? 0 : seg + 1;
      o.keyframes.splice(k, 0, kf);
    } else {
      o.keyframes[k].box = box.map(r4);
    }
    this._refreshObject(i);
    this.invalidate("stage", "timeline", "panel");
    return k;
  }

  setBox(i, box, frame = this.frame) {
    if (this.readOnly || !this.doc.objects[i]) return;
    this._setBoxLive(i, frame, box);
    this.commit();
  }

  addKeyframe(i = this.selected, frame = this.frame) {
    if (this.readOnly || !this.doc.objects[i] || this.keyIndexAt(i, frame) >= 0) return;
    this._setBoxLive(i, frame, this.boxAt(i, frame).box);
    this.commit();
  }

  deleteKeyframe(i = this.selected, frame = this.frame) {
    if (this.readOnly) return;
    const o = this.doc.objects[i];
    const k = this.keyIndexAt(i, frame);
    if (!o || k < 0) return;
    if (o.keyframes.length === 1) {
      this.deleteObject(i);
      return;
    }
    o.keyframes.splice(k, 1);
    this.commit();
  }

  setEase(i, k, ease) {
    if (this.readOnly) return;
    const kf = this.doc.objects[i]?.keyframes[k];
    if (!kf || !EASES.includes(ease)) return;
    kf.ease = ease;
    this.commit();
  }

  cycleEase(step = 1) {
    const i = this.selected;
    const k = this.segmentKey(i);
    if (k < 0) return;
    const cur = EASES.indexOf(this.doc.objects[i].keyframes[k].ease);
    this.setEase(i, k, EASES[(cur + step + EASES.length) % EASES.length]);
  }

  setVisible(i, visible, frame = this.frame) {
    if (this.readOnly || !this.doc.objects[i]) return;
    let k = this.keyIndexAt(i, frame);
    if (k < 0) k = this._setBoxLive(i, frame, this.boxAt(i, frame).box);
    this.doc.objects[i].keyframes[k].visible = !!visible;
    this.commit();
  }

  toggleVisible() {
    const r = this.boxAt(this.selected);
    if (r) this.setVisible(this.selected, !r.visible);
  }

  moveKeyframeLive(i, k, frame) {
    const kfs = this.doc.objects[i].keyframes;
    const lo = k > 0 ? kfs[k - 1].frame + 1 : 0;
    const hi = k < kfs.length - 1 ? kfs[k + 1].frame - 1 : this.doc.frames - 1;
    kfs[k].frame = clamp(Math.round(frame), lo, hi);
    this._refreshObject(i);
    this.frame = kfs[k].frame;
    this.invalidate();
  }

  rename(i, id) {
    const o = this.doc.objects[i];
    if (!o || this.readOnly) return false;
    id = id.trim();
    if (!id) return this._notice("An object needs an id.", false);
    if (this.doc.objects.some((other, j) => j !== i && other.id === id)) {
      return this._notice(`The id "${id}" is already used; ids must be unique.`, false);
    }
    o.id = id;
    this.commit();
    return true;
  }

  setPrompt(i, prompt) {
    const o = this.doc.objects[i];
    if (!o || this.readOnly) return false;
    if (!prompt.trim()) return this._notice("The subject phrase must not be empty.", false);
    o.prompt = prompt;
    this.commit();
    return true;
  }

  setDocSize(frames, width, height) {
    if (this.readOnly) return false;
    let doc = this.doc;
    if (frames !== doc.frames) {
      doc = rescaleFrames(doc, frames);
      if (!doc) return this._notice(`Cannot change to ${frames} frames: two keyframes of one object would land on ` +
                                    "the same frame; delete one first.", false);
    } else {
      doc = cloneDoc(doc);
    }
    doc.width = width;
    doc.height = height;
    this.doc = doc;
    this.commit();
    return true;
  }

  nudge(dxPx, dyPx) {
    const i = this.selected;
    const r = this.boxAt(i);
    if (!r || this.readOnly) return;
    const [W, H] = this.sizePx();
    let [x0, y0, x1, y1] = r.box;
    const dx = clamp(dxPx / W, -x0, 1 - x1);
    const dy = clamp(dyPx / H, -y0, 1 - y1);
    this.setBox(i, [x0 + dx, y0 + dy, x1 + dx, y1 + dy]);
  }

  _notice(text, ok = true) {
    this.notice = text;
    clearTimeout(this._noticeTimer);
    this._noticeTimer = setTimeout(() => {
      this.notice = null;
      this.invalidate("status");
    }, 6000);
    this.invalidate("status", "panel");
    return ok;
  }

  // ----------------------------------------------------------------------------------------
  // Navigation

  setFrame(f) {
    f = clamp(Math.round(f), 0, this.doc.frames - 1);
    if (f === this.frame) return;
    this.frame = f;
    this.invalidate("stage", "timeline", "panel");
  }

  jumpKeyframe(dir) {
    const objs = this.selected >= 0 ? [this.doc.objects[this.selected]] : this.doc.objects;
    const frames = [...new Set(objs.flatMap((o) => o.keyframes.map((k) => k.frame)))].sort((a, b) => a - b);
    const next = dir > 0 ? frames.find((f) => f > this.frame) : frames.reverse().find((f) => f < this.frame);
    if (next !== undefined) this.setFrame(next);
  }

  select(i) {
    i = this.doc.objects.length ? clamp(i, -1, this.doc.objects.length - 1) : -1;
    if (i === this.selected) return;
    this.selected = i;
    this.invalidate();
  }

  togglePlay(on = !this.playing) {
    this.playing = on;
    this.playBtn.classList.toggle("bdx-on", on);
    this.playBtn.textContent = on ? "Pause" : "Play";
    if (!on) return;
    let last = performance.now();
    const step = (now) => {
      if (!this.playing) return;
      if (!this.element.isConnected) return this.togglePlay(false);
      if (now - last >= 1000 / FPS) {
        last = now;
        this.frame = (this.frame + 1) % this.doc.frames;
        this.invalidate("stage", "timeline", "panel");
      }
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  // ----------------------------------------------------------------------------------------
  // DOM

  _build() {
    // Buttons and selects hand keyboard focus back to the editor, so that Ctrl+Z stays the
    // editor's (ComfyUI's graph undo ignores text fields only).
    const btn = (text, title, onclick, cls = "") => h("button", {
      class: `bdx-btn ${cls}`, title, text, type: "button",
      onclick: (e) => {
        onclick(e);
        if (!cls.includes("bdx-bg-upload")) this.focus();
      },
    });
    this.keys = h("textarea", { class: "bdx-keys", readonly: "", tabindex: "0", "aria-label": "Box editor (keyboard)" });

    // toolbar: objects, add, undo/redo
    this.chips = h("div", { class: "bdx-chips" });
    this.undoBtn = btn("↶", "Undo (Ctrl+Z)", () => this.undo());
    this.redoBtn = btn("↷", "Redo (Ctrl+Shift+Z / Ctrl+Y)", () => this.redo());
    const top = h("div", { class: "bdx-bar bdx-top" }, [
      this.chips,
      btn("+ Object", "Add an object at this frame (or drag on an empty part of the frame)", () => this.addObject(), "bdx-add"),
      this.undoBtn, this.redoBtn,
      btn("Clear", "Remove every object (undo brings them back)", () => this.clearObjects(), "bdx-clear"),
      btn("?", SHORTCUTS.map(([k, v]) => `${k}: ${v}`).join("\n"), () => {
        this.showHelp = !this.showHelp;
        this.invalidate("status");
      }, "bdx-help"),
    ]);

    // stage
    this.stageCanvas = h("canvas", { class: "bdx-stage-canvas" });
    this.stage = h("div", { class: "bdx-stage" }, [this.stageCanvas, h("div", { class: "bdx-drop", text: "Drop an image: background" })]);

    // transport + keyframe bar
    this.frameIn = h("input", { class: "bdx-in bdx-int bdx-frame", type: "number", min: "0", step: "1", title: "Current frame" });
    this.frameIn.addEventListener("change", () => this.setFrame(Number(this.frameIn.value)));
    this.frameTotal = h("span", { class: "bdx-muted" });
    this.playBtn = btn("Play", "Play / pause (Space)", () => this.togglePlay());
    this.keyAddBtn = btn("◆+", "Keyframe the selected object at this frame (K)", () => this.addKeyframe(), "bdx-key-add");
    this.keyDelBtn = btn("◆−", "Delete the selected object's keyframe at this frame (Delete)", () => this.deleteKeyframe(), "bdx-key-del");
    this.easeSel = h("select", { class: "bdx-sel-in bdx-ease", title: "Ease of the segment that starts at the keyframe at or before this frame (E)" },
                     EASES.map((e) => h("option", { value: e, text: e })));
    this.easeSel.addEventListener("change", () => {
      this.setEase(this.selected, this.segmentKey(this.selected), this.easeSel.value);
      this.focus();
    });
    this.visibleChk = h("input", { type: "checkbox", class: "bdx-visible", title: "Visible from this frame until the next keyframe (H)" });
    this.visibleChk.addEventListener("change", () => {
      this.setVisible(this.selected, this.visibleChk.checked);
      this.focus();
    });
    const transport = h("div", { class: "bdx-bar bdx-transport" }, [
      btn("|◀", "First frame (Home)", () => this.setFrame(0)),
      btn("◀", "Previous frame (,)", () => this.setFrame(this.frame - 1)),
      this.frameIn, this.frameTotal,
      btn("▶", "Next frame (.)", () => this.setFrame(this.frame + 1)),
      btn("▶|", "Last frame (End)", () => this.setFrame(this.doc.frames - 1)),
      this.playBtn,
      h("span", { class: "bdx-muted", text: " │ " }),
      this.keyAddBtn, this.keyDelBtn, this.easeSel,
      h("label", { class: "bdx-muted bdx-vis", title: "Visible from this frame until the next keyframe (H)" }, [this.visibleChk, "visible"]),
    ]);

    // timeline
    this.tlCanvas = h("canvas", { class: "bdx-tl-canvas" });
    this.timeline = h("div", { class: "bdx-tl" }, [this.tlCanvas]);

    // numeric panel
    const numIn = (cls, title) => {
      const e = h("input", { class: `bdx-in bdx-num ${cls}`, type: "number", step: "0.001", min: "0", max: "1", title });
      e.addEventListener("change", () => this._boxFromInputs());
      return e;
    };
    this.idIn = h("input", { class: "bdx-in bdx-id", style: "width:90px", title: "Object id (unique)" });
    this.idIn.addEventListener("change", () => {
      if (!this.rename(this.selected, this.idIn.value)) this.invalidate("panel");
    });
    this.promptIn = h("input", { class: "bdx-in bdx-prompt", style: "flex:1 1 140px",
                                 title: "Subject phrase, exactly as it appears in your text prompt" });
    this.promptIn.addEventListener("change", () => {
      if (!this.setPrompt(this.selected, this.promptIn.value)) this.invalidate("panel");
    });
    this.boxIns = [numIn("bdx-x0", "x0 (left, 0..1)"), numIn("bdx-y0", "y0 (top, 0..1)"),
                   numIn("bdx-x1", "x1 (right, 0..1)"), numIn("bdx-y1", "y1 (bottom, 0..1)")];
    this.boxPx = h("span", { class: "bdx-muted bdx-px" });
    this.framesIn = h("input", { class: "bdx-in bdx-int bdx-frames", type: "number", min: "1", step: "1", title: "Frames of the video" });
    this.widthIn = h("input", { class: "bdx-in bdx-int bdx-width", type: "number", min: "1", step: "1", title: "Width in pixels" });
    this.heightIn = h("input", { class: "bdx-in bdx-int bdx-height", type: "number", min: "1", step: "1", title: "Height in pixels" });
    for (const e of [this.framesIn, this.widthIn, this.heightIn]) e.addEventListener("change", () => this._sizeFromInputs());
    this.fileIn = h("input", { type: "file", accept: "image/*", style: "display:none" });
    this.fileIn.addEventListener("change", () => {
      const f = this.fileIn.files?.[0];
      this.fileIn.value = "";
      if (f) this._upload(f);
    });
    this.bgLabel = h("span", { class: "bdx-muted bdx-bg-label bdx-px" });
    this.jsonBtn = btn("JSON", "Show / edit the document as text", () => this._toggleJson(), "bdx-json-btn");
    this.objRow = h("div", { class: "bdx-row" }, [
      this.idIn, this.promptIn,
      btn("Delete", "Delete the selected object (Shift+Delete)", () => this.deleteObject(), "bdx-del-obj"),
    ]);
    const grid = h("div", { class: "bdx-grid" }, [
      h("label", { text: "Object" }), this.objRow,
      h("label", { text: "Box" }), h("div", { class: "bdx-row" }, [...this.boxIns, this.boxPx]),
      h("label", { text: "Video" }), h("div", { class: "bdx-row" }, [
        this.framesIn, h("span", { class: "bdx-muted", text: "frames" }), this.widthIn, h("span", { class: "bdx-muted", text: "×" }),
        this.heightIn, h("span", { class: "bdx-muted", text: "px" }),
        h("span", { style: "flex:1" }), this.jsonBtn,
      ]),
      h("label", { text: "Image" }), h("div", { class: "bdx-row" }, [
        btn("Upload…", "Choose a background image (or paste / drop one on the editor)", () => this.fileIn.click(), "bdx-bg-upload"),
        btn("Forget", "Forget the uploaded background image", () => this.host.clearBackground?.(), "bdx-bg-clear"),
        btn("Use its size", "Use the background image's size as width × height", () => this._sizeFromBackground(), "bdx-bg-size"),
        this.bgLabel, this.fileIn,
      ]),
    ]);

    // JSON panel and status
    this.jsonText = h("textarea", { class: "bdx-json-text", spellcheck: "false" });
    this.jsonPanel = h("div", { class: "bdx-json" }, [
      this.jsonText,
      h("div", { class: "bdx-row" }, [
        btn("Apply", "Use this text as the document", () => this.commitText(this.jsonText.value), "bdx-json-apply"),
        btn("Revert", "Show the current document again", () => { this.jsonText.value = this.text; }),
        h("span", { class: "bdx-muted", text: "Any valid Trajectory v1 document; errors name the field." }),
      ]),
    ]);
    this.status = h("div", { class: "bdx-status" });

    // widget-expands: in the Vue node renderer the widget row then takes the node's free height.
    this.element = h("div", { class: "bdx-root widget-expands", "data-boxdirector": "editor" },
                     [this.keys, top, this.stage, transport, this.timeline, grid, this.status, this.jsonPanel]);

    this._bindEvents();
    this._resizeObserver = new ResizeObserver(() => this.invalidate("stage", "timeline"));
    this._resizeObserver.observe(this.stage);
    this._resizeObserver.observe(this.timeline);
  }

  _bindEvents() {
    const root = this.element;
    // Pointer events stay in the editor: the node must not be dragged by a box drag (Vue nodes),
    // and the canvas must not see them. Middle button still pans the graph.
    for (const type of ["pointerdown", "pointermove", "pointerup", "pointercancel", "click", "dblclick", "contextmenu"]) {
      root.addEventListener(type, (e) => {
        if (e.button === 1 || (e.buttons & 4)) return;
        e.stopPropagation();
      });
    }
    root.addEventListener("keydown", (e) => this._onKey(e));
    root.addEventListener("keyup", (e) => {
      if (!this._globalCombo(e)) e.stopPropagation();
    });
    root.addEventListener("paste", (e) => this._onPaste(e));
    root.addEventListener("copy", (e) => this._onCopy(e));
    root.addEventListener("focusin", () => this.host.focused?.());
    root.addEventListener("dragover", (e) => {
      if (![...(e.dataTransfer?.types || [])].includes("Files")) return;
      e.preventDefault();
      e.stopPropagation();
      e.dataTransfer.dropEffect = "copy";
      root.classList.add("bdx-dragover");
    });
    root.addEventListener("dragleave", (e) => {
      if (!root.contains(e.relatedTarget)) root.classList.remove("bdx-dragover");
    });
    root.addEventListener("drop", (e) => {
      root.classList.remove("bdx-dragover");
      const file = [...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/"));
      if (!file) return;
      e.preventDefault();
      e.stopPropagation();
      this._upload(file);
    });

    const sc = this.stageCanvas;
    sc.addEventListener("pointerdown", (e) => this._stageDown(e));
    sc.addEventListener("pointermove", (e) => this._stageMove(e));
    sc.addEventListener("pointerup", (e) => this._stageUp(e));
    sc.addEventListener("pointercancel", (e) => this._stageUp(e, true));
    const tl = this.tlCanvas;
    tl.addEventListener("pointerdown", (e) => this._tlDown(e));
    tl.addEventListener("pointermove", (e) => this._tlMove(e));
    tl.addEventListener("pointerup", (e) => this._tlUp(e));
    tl.addEventListener("pointercancel", (e) => this._tlUp(e, true));
    tl.addEventListener("dblclick", (e) => this._tlDouble(e));
  }

  focus() {
    this.keys.focus({ preventScroll: true });
  }

  _globalCombo(e) {
    // ComfyUI's own save / queue / open keep working while the editor has focus.
    return (e.ctrlKey || e.metaKey) && ["s", "S", "Enter", "o", "O"].includes(e.key);
  }

  _onKey(e) {
    if (this._globalCombo(e)) return;
    e.stopPropagation();
    const t = e.target;
    if (t !== this.keys && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
      if (e.key === "Escape") this.focus();
      return; // typing in the panel
    }
    const ctrl = e.ctrlKey || e.metaKey;
    const k = e.key;
    let handled = true;
    if (ctrl && (k === "z" || k === "Z") && !e.shiftKey) this.undo();
    else if (ctrl && ((k === "z" || k === "Z") && e.shiftKey || k === "y" || k === "Y")) this.redo();
    else if (ctrl) handled = false;
    else if (k === "Delete" || k === "Backspace") e.shiftKey ? this.deleteObject() : this.deleteKeyframe();
    else if (k === "k" || k === "K") this.addKeyframe();
    else if (k === "h" || k === "H") this.toggleVisible();
    else if (k === "e" || k === "E") this.cycleEase(e.shiftKey ? -1 : 1);
    else if (k.startsWith("Arrow")) {
      const s = e.shiftKey ? 10 : 1;
      const d = { ArrowLeft: [-s, 0], ArrowRight: [s, 0], ArrowUp: [0, -s], ArrowDown: [0, s] }[k];
      this.nudge(d[0], d[1]);
    } else if (k === "," || k === "<") this.setFrame(this.frame - (e.shiftKey ? 10 : 1));
    else if (k === "." || k === ">") this.setFrame(this.frame + (e.shiftKey ? 10 : 1));
    else if (k === "[") this.jumpKeyframe(-1);
    else if (k === "]") this.jumpKeyframe(1);
    else if (k === "Home") this.setFrame(0);
    else if (k === "End") this.setFrame(this.doc.frames - 1);
    else if (k === "Tab") {
      const n = this.doc.objects.length;
      if (n) this.select(((this.selected < 0 ? (e.shiftKey ? 0 : -1) : this.selected) + (e.shiftKey ? -1 : 1) + n) % n);
    } else if (k === " ") this.togglePlay();
    else if (k === "Escape") {
      this.togglePlay(false);
      this.select(-1);
    } else handled = false;
    if (handled) e.preventDefault();
  }

  _onPaste(e) {
    const t = e.target;
    if (t !== this.keys && (t.tagName === "INPUT" || t.tagName === "TEXTAREA")) {
      e.stopPropagation();
      return;
    }
    const item = [...(e.clipboardData?.items || [])].find((it) => it.type.startsWith("image/"));
    const file = item?.getAsFile();
    e.stopPropagation();
    if (file) {
      e.preventDefault();
      this._upload(file);
      return;
    }
    // A pasted Trajectory document replaces this one (one undo step); other text is ignored.
    const text = e.clipboardData?.getData("text/plain") || "";
    if (!text.trim().startsWith("{") || this.readOnly) return;
    e.preventDefault();
    try {
      parseTrajectory(text);
    } catch (err) {
      this._notice(`Pasted text is not a Trajectory document: ${err.message}`, false);
      return;
    }
    this.commitText(text);
    this._notice("Pasted a Trajectory document.");
  }

  _onCopy(e) {
    const t = e.target;
    if (t !== this.keys) return; // copying from a text field works as usual
    e.clipboardData?.setData("text/plain", this.text);
    e.preventDefault();
    e.stopPropagation();
    this._notice("Copied the Trajectory document.");
  }

  async _upload(file) {
    if (!this.host.uploadBackground) return;
    this._notice("Uploading background…");
    try {
      await this.host.uploadBackground(file);
      this._notice("Background set (stored as a file reference in the workflow).");
    } catch (err) {
      this._notice(`Background upload failed: ${err?.message || err}`, false);
    }
    this.invalidate();
  }

  _sizeFromBackground() {
    const img = this.host.background?.(this.frame)?.image;
    if (!img?.naturalWidth) return this._notice("No background image loaded.", false);
    this.setDocSize(this.doc.frames, img.naturalWidth, img.naturalHeight);
  }

  _boxFromInputs() {
    const i = this.selected;
    const r = this.boxAt(i);
    if (!r) return;
    const v = this.boxIns.map((e, j) => (e.value === "" ? r.box[j] : Number(e.value)));
    const ok = v.every(Number.isFinite) && v.every((x) => x >= 0 && x <= 1) && v[0] < v[2] && v[1] < v[3];
    this.boxIns.forEach((e) => e.classList.toggle("bdx-bad", !ok));
    if (!ok) return this._notice("A box is [x0, y0, x1, y1] in 0..1 with x0 < x1 and y0 < y1.", false);
    this.setBox(i, v);
  }

  _sizeFromInputs() {
    const v = [this.framesIn, this.widthIn, this.heightIn].map((e) => Number(e.value));
    if (!v.every((x) => Number.isInteger(x) && x >= 1)) {
      this.invalidate("panel");
      return this._notice("Frames, width and height are whole numbers >= 1.", false);
    }
    if (!this.setDocSize(...v)) this.invalidate("panel");
  }

  _toggleJson() {
    this.jsonOpen = !this.jsonOpen;
    this.jsonPanel.classList.toggle("bdx-open", this.jsonOpen);
    this.jsonBtn.classList.toggle("bdx-on", this.jsonOpen);
    if (this.jsonOpen) this.jsonText.value = this.text;
  }

  // ----------------------------------------------------------------------------------------
  // Rendering (coalesced into one animation frame)

  invalidate(...parts) {
    for (const p of parts.length ? parts : ALL_PARTS) this._dirty.add(p);
    if (this._raf) return;
    this._raf = requestAnimationFrame(() => {
      this._raf = 0;
      this._render();
    });
  }

  /** Draw everything now (tests and screenshots don't wait for an animation frame). */
  renderNow() {
    if (this._raf) cancelAnimationFrame(this._raf);
    this._raf = 0;
    for (const p of ALL_PARTS) this._dirty.add(p);
    this._render();
  }

  _render() {
    const d = this._dirty;
    this._dirty = new Set();
    try {
      if (d.has("chips")) this._renderChips();
      if (d.has("panel") || d.has("chips")) this._renderPanel();
      if (d.has("stage")) this._drawStage();
      if (d.has("timeline") || d.has("chips")) this._drawTimeline();
      if (d.has("status") || d.has("panel")) this._renderStatus();
    } catch (err) {
      // A drawing problem must never take the node down; show it instead.
      this.status.textContent = `Box editor: ${err?.message || err}`;
    }
  }

  _renderChips() {
    this.chips.replaceChildren(...this.doc.objects.map((o, i) => {
      const chip = h("div", { class: `bdx-chip${i === this.selected ? " bdx-sel" : ""}`, title: `${o.id}: ${o.prompt}`,
                              "data-index": String(i) }, [
        h("span", { class: "bdx-dot", style: `background:${objectColorCss(i)}` }), o.id]);
      chip.addEventListener("click", () => {
        this.select(i);
        this.focus();
      });
      return chip;
    }));
    if (!this.doc.objects.length) this.chips.appendChild(h("span", { class: "bdx-muted", text: "no objects: drag on the frame" }));
    this.undoBtn.disabled = !this.undoStack.length;
    this.redoBtn.disabled = !this.redoStack.length;
  }

  _setInput(e, v) {
    if (document.activeElement === e) return;
    e.value = v;
    e.classList.remove("bdx-bad");
  }

  _renderPanel() {
    const i = this.selected;
    const o = this.doc.objects[i];
    const ro = this.readOnly;
    this.undoBtn.disabled = !this.undoStack.length;
    this.redoBtn.disabled = !this.redoStack.length;
    this._setInput(this.frameIn, String(this.frame));
    this.frameIn.max = String(this.doc.frames - 1);
    this.frameTotal.textContent = `/ ${this.doc.frames - 1}`;
    for (const e of [this.idIn, this.promptIn, ...this.boxIns, this.easeSel, this.visibleChk, this.keyAddBtn, this.keyDelBtn]) {
      e.disabled = !o || ro;
    }
    for (const e of this.objRow.querySelectorAll("button")) e.disabled = !o || ro;
    const [W, H] = this.sizePx();
    if (o) {
      const r = this.boxAt(i);
      const k = this.keyIndexAt(i);
      const seg = this.segmentKey(i);
      this._setInput(this.idIn, o.id);
      this._setInput(this.promptIn, o.prompt);
      r.box.forEach((v, j) => this._setInput(this.boxIns[j], String(r4(v))));
      const [x0, y0, x1, y1] = r.box;
      this.boxPx.textContent = `${k >= 0 ? "◆ key" : "interpolated"} · ${Math.round(x0 * W)},${Math.round(y0 * H)} ` +
                               `${Math.round((x1 - x0) * W)}×${Math.round((y1 - y0) * H)} px`;
      this.easeSel.value = o.keyframes[seg].ease;
      this.easeSel.title = `Ease of the segment from the keyframe at f${o.keyframes[seg].frame} to the next (E)`;
      this.visibleChk.checked = r.visible;
      this.keyAddBtn.disabled = ro || k >= 0;
      this.keyDelBtn.disabled = ro || k < 0;
    } else {
      for (const e of [this.idIn, this.promptIn, ...this.boxIns]) this._setInput(e, "");
      this.boxPx.textContent = "select or draw an object";
    }
    this._setInput(this.framesIn, String(this.doc.frames));
    this._setInput(this.widthIn, String(this.doc.width));
    this._setInput(this.heightIn, String(this.doc.height));
    const bg = this.host.background?.(this.frame);
    this.bgLabel.textContent = bg?.label || "none: connect an IMAGE, or paste / drop / upload one";
    this.bgLabel.title = bg?.label || "";
    if (this.jsonOpen && document.activeElement !== this.jsonText) this.jsonText.value = this.text;
    const nTl = Math.max(1, this.doc.objects.length);
    this.timeline.style.height = `${18 + Math.min(nTl, 8) * 16 + 4}px`;
  }

  _renderStatus() {
    const parts = [];
    const add = (cls, text) => parts.push(h("div", { class: cls, text }));
    if (this.readOnly) add("bdx-warn", "The trajectory input is connected to a link: the editor shows the widget's text only.");
    if (this.error) {
      if (this.error.field === "objects" && !this.doc.objects.length && /is empty/.test(this.error.reason)) {
        add("bdx-warn", "No objects yet: drag on the frame to draw one (the node needs at least one).");
      } else {
        add("bdx-err", `⚠ ${this.error.message}`);
      }
    }
    if (this.backendError) add("bdx-err", `Server: ${this.backendError}`);
    if (this.notice) add("bdx-warn", this.notice);
    const ov = this.host.overrides?.() || {};
    const over = [];
    if (ov.frames > 0 && ov.frames !== this.doc.frames) over.push(`frames ${ov.frames} (keyframes rescale when queued)`);
    if (ov.width > 0 && ov.width !== this.doc.width) over.push(`width ${ov.width}`);
    if (ov.height > 0 && ov.height !== this.doc.height) over.push(`height ${ov.height}`);
    if (over.length) add("bdx-muted", `Node overrides: ${over.join(", ")}.`);
    if (this.showHelp) for (const [k, v] of SHORTCUTS) add("bdx-muted", `${k}: ${v}`);
    if (!parts.length) {
      add("bdx-muted", "Drag empty frame: new object · drag box: move · handles: resize · K key · Del delete key · " +
                       "E ease · H hide · Ctrl+Z undo · paste/drop an image: background · ? all keys");
    }
    this.status.replaceChildren(...parts);
    this.element.dataset.error = this.error ? this.error.message : "";
  }

  _canvasSize(canvas) {
    const w = canvas.clientWidth;
    const hgt = canvas.clientHeight;
    const rect = canvas.getBoundingClientRect();
    const zoom = w ? rect.width / w : 1;
    const dpr = (window.devicePixelRatio || 1) * clamp(zoom, 0.5, 4);
    const bw = Math.max(1, Math.round(w * dpr));
    const bh = Math.max(1, Math.round(hgt * dpr));
    if (canvas.width !== bw || canvas.height !== bh) {
      canvas.width = bw;
      canvas.height = bh;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx, w, h: hgt };
  }

  /** The video frame's rectangle inside the stage (CSS pixels), letterboxed at the video aspect. */
  frameRect() {
    const w = this.stageCanvas.clientWidth;
    const hh = this.stageCanvas.clientHeight;
    const [W, H] = this.sizePx();
    const pad = 10;
    const aw = Math.max(1, w - 2 * pad);
    const ah = Math.max(1, hh - 2 * pad);
    const s = Math.min(aw / W, ah / H);
    const fw = W * s;
    const fh = H * s;
    return { x: (w - fw) / 2, y: (hh - fh) / 2, w: fw, h: fh };
  }

  _drawStage() {
    const { ctx, w, h: hh } = this._canvasSize(this.stageCanvas);
    if (!w || !hh) return;
    const fr = this.frameRect();
    const X = (v) => fr.x + v * fr.w;
    const Y = (v) => fr.y + v * fr.h;
    ctx.clearRect(0, 0, w, hh);
    ctx.fillStyle = "#0f1013";
    ctx.fillRect(0, 0, w, hh);
    // background: the chosen frame / image, else the backend's dark checker
    const bg = this.host.background?.(this.frame);
    if (bg?.image && bg.image.complete && bg.image.naturalWidth) {
      ctx.drawImage(bg.image, fr.x, fr.y, fr.w, fr.h);
    } else {
      ctx.save();
      ctx.beginPath();
      ctx.rect(fr.x, fr.y, fr.w, fr.h);
      ctx.clip();
      const cell = Math.max(6, fr.w / 26);
      for (let yy = 0; yy * cell < fr.h; yy++) {
        for (let xx = 0; xx * cell < fr.w; xx++) {
          ctx.fillStyle = (xx + yy) % 2 ? "#2a2b30" : "#1f2024";
          ctx.fillRect(fr.x + xx * cell, fr.y + yy * cell, cell, cell);
        }
      }
      ctx.restore();
    }
    ctx.strokeStyle = "#555a66";
    ctx.lineWidth = 1;
    ctx.strokeRect(fr.x - 0.5, fr.y - 0.5, fr.w + 1, fr.h + 1);

    const order = this.doc.objects.map((_, i) => i).filter((i) => i !== this.selected);
    if (this.selected >= 0) order.push(this.selected);
    // the selected object's path, ghosts of neighbouring keyframes, keyframe dots
    if (this.selected >= 0) this._drawSelectedExtras(ctx, X, Y);
    for (const i of order) {
      const o = this.doc.objects[i];
      const r = this.boxAt(i);
      if (!r) continue;
      const [x0, y0, x1, y1] = r.box;
      const sel = i === this.selected;
      ctx.save();
      ctx.lineWidth = sel ? 2.5 : 2;
      ctx.strokeStyle = objectColorCss(i, r.visible ? 1 : 0.55);
      if (!r.visible) ctx.setLineDash([3, 4]);
      else {
        ctx.fillStyle = objectColorCss(i, sel ? 0.16 : 0.09);
        ctx.fillRect(X(x0), Y(y0), X(x1) - X(x0), Y(y1) - Y(y0));
      }
      ctx.strokeRect(X(x0), Y(y0), X(x1) - X(x0), Y(y1) - Y(y0));
      ctx.restore();
      // label: id (◆ when a keyframe sits on this frame)
      const label = `${r.keyframe >= 0 ? "◆ " : ""}${o.id}${r.visible ? "" : " (hidden)"}${sel ? ` · ${o.prompt}` : ""}`;
      ctx.font = "11px system-ui, sans-serif";
      const tw = Math.min(ctx.measureText(label).width + 8, Math.max(40, w - X(x0)));
      const ly = Y(y0) >= 16 ? Y(y0) - 15 : Y(y0) + 1;
      ctx.fillStyle = objectColorCss(i, r.visible ? 0.92 : 0.5);
      ctx.fillRect(X(x0), ly, tw, 14);
      ctx.fillStyle = "#101010";
      ctx.save();
      ctx.beginPath();
      ctx.rect(X(x0), ly, tw, 14);
      ctx.clip();
      ctx.fillText(label, X(x0) + 4, ly + 11);
      ctx.restore();
      if (sel && !this.readOnly) {
        for (const [, hx, hy] of this._handles(r.box, X, Y)) {
          ctx.fillStyle = "#fff";
          ctx.strokeStyle = objectColorCss(i);
          ctx.lineWidth = 1.5;
          ctx.fillRect(hx - 4, hy - 4, 8, 8);
          ctx.strokeRect(hx - 4, hy - 4, 8, 8);
        }
      }
    }
    // a box being drawn
    if (this.drag?.mode === "draw" && this.drag.moved) {
      const b = this.drag.box;
      ctx.save();
      ctx.setLineDash([5, 4]);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5;
      ctx.strokeRect(X(b[0]), Y(b[1]), X(b[2]) - X(b[0]), Y(b[3]) - Y(b[1]));
      ctx.restore();
    }
    // frame counter
    ctx.font = "11px system-ui, sans-serif";
    const [W, H] = this.sizePx();
    const hud = `frame ${this.frame} / ${this.doc.frames - 1}   ${W}×${H}`;
    ctx.fillStyle = "rgba(0,0,0,.55)";
    ctx.fillRect(fr.x + 4, fr.y + fr.h - 18, ctx.measureText(hud).width + 10, 14);
    ctx.fillStyle = "#e8e8e8";
    ctx.fillText(hud, fr.x + 9, fr.y + fr.h - 7);
  }

  _drawSelectedExtras(ctx, X, Y) {
    const i = this.selected;
    const o = this.doc.objects[i];
    const p = this.prepared[i];
    if (!o || !p) return;
    const first = o.keyframes[0].frame;
    const last = o.keyframes[o.keyframes.length - 1].frame;
    // interpolated path of the box centre (at most ~600 samples, always through the keyframes)
    const step = Math.max(1, Math.ceil((last - first) / 600));
    const frames = [];
    for (let f = first; f <= last; f += step) frames.push(f);
    for (const kf of o.keyframes) frames.push(kf.frame);
    const uniq = [...new Set(frames)].sort((a, b) => a - b);
    ctx.save();
    ctx.lineWidth = 1.5;
    let prev = null;
    for (const f of uniq) {
      const r = p.boxAt(f);
      const c = [X((r.box[0] + r.box[2]) / 2), Y((r.box[1] + r.box[3]) / 2)];
      if (prev) {
        ctx.beginPath();
        ctx.strokeStyle = objectColorCss(i, prev.visible ? 0.85 : 0.35);
        ctx.setLineDash(prev.visible ? [] : [3, 4]);
        ctx.moveTo(prev.c[0], prev.c[1]);
        ctx.lineTo(c[0], c[1]);
        ctx.stroke();
      }
      prev = { c, visible: r.visible };
    }
    ctx.setLineDash([]);
    // one dot per frame along the path: their spacing shows the speed (the easing)
    if (last - first <= 400) {
      for (let f = first + 1; f < last; f++) {
        const r = p.boxAt(f);
        if (r.keyframe >= 0) continue;
        ctx.beginPath();
        ctx.arc(X((r.box[0] + r.box[2]) / 2), Y((r.box[1] + r.box[3]) / 2), 1.6, 0, 2 * Math.PI);
        ctx.fillStyle = f === this.frame ? "#fff" : "rgba(255,255,255,.75)";
        ctx.fill();
        ctx.strokeStyle = "rgba(0,0,0,.6)";
        ctx.lineWidth = 0.8;
        ctx.stroke();
      }
    }
    // ghosts: the neighbouring keyframes' boxes
    const before = [...o.keyframes].reverse().find((k) => k.frame < this.frame);
    const after = o.keyframes.find((k) => k.frame > this.frame);
    ctx.font = "10px system-ui, sans-serif";
    for (const kf of [before, after]) {
      if (!kf) continue;
      const [x0, y0, x1, y1] = kf.box;
      ctx.setLineDash([4, 4]);
      ctx.strokeStyle = objectColorCss(i, 0.45);
      ctx.lineWidth = 1;
      ctx.strokeRect(X(x0), Y(y0), X(x1) - X(x0), Y(y1) - Y(y0));
      ctx.fillStyle = objectColorCss(i, 0.7);
      ctx.fillText(`f${kf.frame}`, X(x0) + 3, Y(y1) - 4);
    }
    ctx.setLineDash([]);
    // keyframe dots, numbered by frame so every point says which it is
    o.keyframes.forEach((kf) => {
      const cx = X((kf.box[0] + kf.box[2]) / 2);
      const cy = Y((kf.box[1] + kf.box[3]) / 2);
      ctx.beginPath();
      ctx.fillStyle = kf.frame === this.frame ? "#fff" : objectColorCss(i);
      ctx.strokeStyle = "#111";
      ctx.lineWidth = 1;
      ctx.moveTo(cx, cy - 5);
      ctx.lineTo(cx + 5, cy);
      ctx.lineTo(cx, cy + 5);
      ctx.lineTo(cx - 5, cy);
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = "#eee";
      ctx.fillText(`f${kf.frame}${kf.visible ? "" : " hide"}`, cx + 7, cy - 5);
    });
    ctx.restore();
  }

  _handles(box, X, Y) {
    const [x0, y0, x1, y1] = box;
    const xm = (X(x0) + X(x1)) / 2;
    const ym = (Y(y0) + Y(y1)) / 2;
    const pos = { nw: [X(x0), Y(y0)], n: [xm, Y(y0)], ne: [X(x1), Y(y0)], e: [X(x1), ym], se: [X(x1), Y(y1)],
                  s: [xm, Y(y1)], sw: [X(x0), Y(y1)], w: [X(x0), ym] };
    return HANDLES.map((k) => [k, ...pos[k]]);
  }

  // ----------------------------------------------------------------------------------------
  // Stage interaction

  _local(e, canvas) {
    const rect = canvas.getBoundingClientRect();
    const sx = rect.width ? canvas.clientWidth / rect.width : 1;
    const sy = rect.height ? canvas.clientHeight / rect.height : 1;
    return [(e.clientX - rect.left) * sx, (e.clientY - rect.top) * sy];
  }

  _norm(lx, ly) {
    // A drag keeps the frame rectangle it started with, whatever the layout does meanwhile.
    const fr = this.drag?.fr || this.frameRect();
    return [(lx - fr.x) / fr.w, (ly - fr.y) / fr.h];
  }

  /** What is under a stage point: {mode: "resize", handle} | {mode: "move", index} | null. */
  hitTest(lx, ly) {
    const fr = this.frameRect();
    const X = (v) => fr.x + v * fr.w;
    const Y = (v) => fr.y + v * fr.h;
    if (this.selected >= 0) {
      const r = this.boxAt(this.selected);
      if (r) {
        for (const [k, hx, hy] of this._handles(r.box, X, Y)) {
          if (Math.abs(lx - hx) <= HANDLE && Math.abs(ly - hy) <= HANDLE) return { mode: "resize", handle: k, index: this.selected };
        }
      }
    }
    let best = null;
    this.doc.objects.forEach((_, i) => {
      const r = this.boxAt(i);
      if (!r) return;
      const [x0, y0, x1, y1] = r.box;
      if (lx < X(x0) - 2 || lx > X(x1) + 2 || ly < Y(y0) - 2 || ly > Y(y1) + 2) return;
      const area = (x1 - x0) * (y1 - y0) * (i === this.selected ? 0 : 1) * (r.visible ? 1 : 4);
      if (!best || area < best.area) best = { mode: "move", index: i, area };
    });
    return best;
  }

  _stageDown(e) {
    if (e.button !== 0) return;
    this.focus();
    this.togglePlay(false);
    const [lx, ly] = this._local(e, this.stageCanvas);
    const hit = this.hitTest(lx, ly);
    const p = this._norm(lx, ly);
    this.stageCanvas.setPointerCapture?.(e.pointerId);
    if (hit) this.select(hit.index);
    if (this.readOnly) return;
    if (hit?.mode === "resize" || hit?.mode === "move") {
      this.drag = { mode: hit.mode, handle: hit.handle, index: hit.index, start: [lx, ly], p0: p,
                    box0: this.boxAt(hit.index).box.slice(), moved: false, fr: this.frameRect() };
    } else {
      this.select(-1);
      const c = [clamp(p[0], 0, 1), clamp(p[1], 0, 1)];
      this.drag = { mode: "draw", start: [lx, ly], p0: c, box: [c[0], c[1], c[0], c[1]], moved: false,
                    fr: this.frameRect() };
    }
    e.preventDefault();
  }

  _stageMove(e) {
    const [lx, ly] = this._local(e, this.stageCanvas);
    const d = this.drag;
    if (!d) {
      const hit = this.readOnly ? null : this.hitTest(lx, ly);
      this.stageCanvas.style.cursor = hit?.mode === "resize" ? CURSORS[hit.handle] : hit ? "move" : "crosshair";
      return;
    }
    if (!d.moved && Math.hypot(lx - d.start[0], ly - d.start[1]) < DRAG_THRESHOLD) return;
    d.moved = true;
    const p = this._norm(lx, ly);
    if (d.mode === "draw") {
      const c = [clamp(p[0], 0, 1), clamp(p[1], 0, 1)];
      d.box = [Math.min(d.p0[0], c[0]), Math.min(d.p0[1], c[1]), Math.max(d.p0[0], c[0]), Math.max(d.p0[1], c[1])];
      this.invalidate("stage");
      return;
    }
    const [x0, y0, x1, y1] = d.box0;
    let box;
    if (d.mode === "move") {
      const dx = clamp(p[0] - d.p0[0], -x0, 1 - x1);
      const dy = clamp(p[1] - d.p0[1], -y0, 1 - y1);
      box = [x0 + dx, y0 + dy, x1 + dx, y1 + dy];
    } else {
      box = [x0, y0, x1, y1];
      const dx = p[0] - d.p0[0];
      const dy = p[1] - d.p0[1];
      if (d.handle.includes("w")) box[0] = clamp(x0 + dx, 0, x1 - MIN_SIZE);
      if (d.handle.includes("e")) box[2] = clamp(x1 + dx, x0 + MIN_SIZE, 1);
      if (d.handle.includes("n")) box[1] = clamp(y0 + dy, 0, y1 - MIN_SIZE);
      if (d.handle.includes("s")) box[3] = clamp(y1 + dy, y0 + MIN_SIZE, 1);
    }
    this._setBoxLive(d.index, this.frame, box);
  }

  _stageUp(e, cancel = false) {
    const d = this.drag;
    this.drag = null;
    this.stageCanvas.releasePointerCapture?.(e.pointerId);
    if (!d) return;
    if (cancel) {
      this._applyText(this.text);
      return;
    }
    if (d.mode === "draw") {
      const fr = this.frameRect();
      const b = d.box;
      if (d.moved && (b[2] - b[0]) * fr.w >= 4 && (b[3] - b[1]) * fr.h >= 4 && b[2] - b[0] >= MIN_SIZE && b[3] - b[1] >= MIN_SIZE) {
        this.addObject(b);
      } else {
        this.invalidate();
      }
      return;
    }
    if (d.moved) this.commit();
  }

  // ----------------------------------------------------------------------------------------
  // Timeline

  _tlGeom() {
    const w = this.tlCanvas.clientWidth;
    const L = 78;
    const R = 10;
    const top = 18;
    const n = Math.max(1, Math.min(this.doc.objects.length, 8));
    const row = Math.min(16, Math.max(8, (this.tlCanvas.clientHeight - top - 4) / n));
    const F = this.doc.frames;
    const span = Math.max(1, w - L - R);
    const x = (f) => L + (F > 1 ? (f / (F - 1)) * span : span / 2);
    const f = (px) => (F > 1 ? ((px - L) / span) * (F - 1) : 0);
    return { w, L, R, top, row, x, f };
  }

  _drawTimeline() {
    const { ctx, w, h: hh } = this._canvasSize(this.tlCanvas);
    if (!w || !hh) return;
    const g = this._tlGeom();
    const F = this.doc.frames;
    ctx.clearRect(0, 0, w, hh);
    ctx.fillStyle = "#1d1f25";
    ctx.fillRect(0, 0, w, hh);
    // ruler
    ctx.fillStyle = "#262830";
    ctx.fillRect(g.L, 0, w - g.L, g.top - 2);
    ctx.font = "10px system-ui, sans-serif";
    const stepPx = 60;
    const raw = (F - 1) / Math.max(1, (w - g.L - g.R) / stepPx);
    const nice = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000];
    const tick = nice.find((s) => s >= raw) || 100000;
    ctx.strokeStyle = "#444855";
    ctx.fillStyle = "#9a9ca6";
    for (let f = 0; f < F; f += tick) {
      const x = g.x(f);
      ctx.beginPath();
      ctx.moveTo(x + 0.5, g.top - 8);
      ctx.lineTo(x + 0.5, g.top - 2);
      ctx.stroke();
      const label = String(f);
      const tw = ctx.measureText(label).width;
      ctx.fillText(label, x + 2 + tw > w - 1 ? x - 2 - tw : x + 2, 10);
    }
    // rows
    this.doc.objects.slice(0, 8).forEach((o, i) => {
      const y = g.top + i * g.row;
      const mid = y + g.row / 2;
      if (i === this.selected) {
        ctx.fillStyle = "#2b2e38";
        ctx.fillRect(0, y, w, g.row);
      }
      ctx.fillStyle = objectColorCss(i);
      ctx.fillRect(4, mid - 4, 8, 8);
      ctx.fillStyle = i === this.selected ? "#fff" : "#c8c8cc";
      ctx.font = "11px system-ui, sans-serif";
      ctx.save();
      ctx.beginPath();
      ctx.rect(14, y, g.L - 18, g.row);
      ctx.clip();
      ctx.fillText(o.id, 16, mid + 4);
      ctx.restore();
      const kfs = o.keyframes;
      // segments: colour bar, dashed when hidden, ease written in
      for (let k = 0; k < kfs.length - 1; k++) {
        const xa = g.x(kfs[k].frame);
        const xb = g.x(kfs[k + 1].frame);
        ctx.fillStyle = objectColorCss(i, kfs[k].visible ? 0.35 : 0.1);
        ctx.fillRect(xa, mid - 3, xb - xa, 6);
        // the ease's shape, drawn small
        if (xb - xa > 14 && g.row >= 12) {
          ctx.beginPath();
          ctx.strokeStyle = objectColorCss(i, 0.9);
          ctx.lineWidth = 1;
          for (let s = 0; s <= 16; s++) {
            const t = s / 16;
            const yy = mid + 3 - 6 * easeCurve(kfs[k].ease, t);
            if (s === 0) ctx.moveTo(xa + t * (xb - xa), yy);
            else ctx.lineTo(xa + t * (xb - xa), yy);
          }
          ctx.stroke();
        }
        const label = EASE_SHORT[kfs[k].ease];
        ctx.font = "9px system-ui, sans-serif";
        const tw = ctx.measureText(label).width;
        if (xb - xa > tw + 16 && kfs[k].ease !== "linear") {
          ctx.fillStyle = "#e6e6e6";
          ctx.fillText(label, (xa + xb) / 2 - tw / 2, y + 8.5);
        }
      }
      // keyframe diamonds
      for (const kf of kfs) {
        const x = g.x(kf.frame);
        const r = Math.min(5, g.row / 2 - 1);
        ctx.beginPath();
        ctx.moveTo(x, mid - r);
        ctx.lineTo(x + r, mid);
        ctx.lineTo(x, mid + r);
        ctx.lineTo(x - r, mid);
        ctx.closePath();
        ctx.fillStyle = kf.frame === this.frame && i === this.selected ? "#fff" : objectColorCss(i, kf.visible ? 1 : 0.4);
        ctx.fill();
        ctx.strokeStyle = "#111";
        ctx.lineWidth = 1;
        ctx.stroke();
      }
    });
    if (this.doc.objects.length > 8) {
      ctx.fillStyle = "#9a9ca6";
      ctx.fillText(`+${this.doc.objects.length - 8} more`, 4, hh - 2);
    }
    // playhead
    const x = g.x(this.frame);
    ctx.strokeStyle = "#f0f0f0";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(x + 0.5, 0);
    ctx.lineTo(x + 0.5, hh);
    ctx.stroke();
    ctx.fillStyle = "#f0f0f0";
    ctx.beginPath();
    ctx.moveTo(x - 4, 0);
    ctx.lineTo(x + 5, 0);
    ctx.lineTo(x + 0.5, 6);
    ctx.closePath();
    ctx.fill();
  }

  _tlHit(lx, ly) {
    const g = this._tlGeom();
    const rowIndex = ly < g.top ? -1 : Math.floor((ly - g.top) / g.row);
    const row = rowIndex >= 0 && rowIndex < Math.min(8, this.doc.objects.length) ? rowIndex : -1;
    if (row >= 0) {
      const kfs = this.doc.objects[row].keyframes;
      let best = -1;
      let bd = 7;
      kfs.forEach((kf, k) => {
        const d = Math.abs(g.x(kf.frame) - lx);
        if (d <= bd) {
          bd = d;
          best = k;
        }
      });
      if (best >= 0 && lx >= g.L - 6) return { kind: "key", row, key: best };
      if (lx < g.L) return { kind: "label", row };
      return { kind: "row", row };
    }
    return { kind: "ruler" };
  }

  _tlDown(e) {
    if (e.button !== 0) return;
    this.focus();
    this.togglePlay(false);
    const [lx, ly] = this._local(e, this.tlCanvas);
    const g = this._tlGeom();
    const hit = this._tlHit(lx, ly);
    this.tlCanvas.setPointerCapture?.(e.pointerId);
    if (hit.row !== undefined) this.select(hit.row);
    if (hit.kind === "key") {
      const kf = this.doc.objects[hit.row].keyframes[hit.key];
      this.setFrame(kf.frame);
      this.drag = { mode: "key", index: hit.row, key: hit.key, start: [lx, ly], frame0: kf.frame, moved: false };
    } else if (hit.kind !== "label") {
      this.setFrame(g.f(lx));
      this.drag = { mode: "scrub", start: [lx, ly] };
    }
    e.preventDefault();
  }

  _tlMove(e) {
    const d = this.drag;
    const [lx, ly] = this._local(e, this.tlCanvas);
    if (!d) {
      const hit = this._tlHit(lx, ly);
      this.tlCanvas.style.cursor = hit.kind === "key" ? (this.readOnly ? "pointer" : "ew-resize") : hit.kind === "label" ? "pointer" : "col-resize";
      return;
    }
    const g = this._tlGeom();
    if (d.mode === "scrub") this.setFrame(g.f(lx));
    else if (d.mode === "key" && !this.readOnly) {
      if (!d.moved && Math.abs(lx - d.start[0]) < DRAG_THRESHOLD) return;
      d.moved = true;
      this.moveKeyframeLive(d.index, d.key, g.f(lx));
    }
  }

  _tlUp(e, cancel = false) {
    const d = this.drag;
    this.drag = null;
    this.tlCanvas.releasePointerCapture?.(e.pointerId);
    if (!d) return;
    if (cancel && d.mode === "key") {
      this._applyText(this.text);
      return;
    }
    if (d.mode === "key" && d.moved) this.commit();
  }

  _tlDouble(e) {
    const [lx, ly] = this._local(e, this.tlCanvas);
    const hit = this._tlHit(lx, ly);
    if (hit.kind !== "row") return;
    const g = this._tlGeom();
    this.select(hit.row);
    this.setFrame(g.f(lx));
    this.addKeyframe(hit.row, this.frame);
  }

  /** Client (page) coordinates of a point of the video frame given in 0..1 (tests, automation). */
  clientPointOfFrame(nx, ny) {
    const fr = this.frameRect();
    return this._toClient(this.stageCanvas, fr.x + nx * fr.w, fr.y + ny * fr.h);
  }

  /** Client coordinates of a frame on an object's timeline row (row -1: the ruler). */
  clientPointOfTimeline(frame, row = -1) {
    const g = this._tlGeom();
    const y = row < 0 ? g.top / 2 : g.top + row * g.row + g.row / 2;
    return this._toClient(this.tlCanvas, g.x(frame), y);
  }

  _toClient(canvas, lx, ly) {
    const rect = canvas.getBoundingClientRect();
    const sx = canvas.clientWidth ? rect.width / canvas.clientWidth : 1;
    const sy = canvas.clientHeight ? rect.height / canvas.clientHeight : 1;
    return [rect.left + lx * sx, rect.top + ly * sy];
  }

  destroy() {
    this.togglePlay(false);
    this._resizeObserver?.disconnect();
    if (this._raf) cancelAnimationFrame(this._raf);
    clearTimeout(this._noticeTimer);
  }
}
