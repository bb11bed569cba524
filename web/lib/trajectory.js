// Box Director: the Trajectory document (version 1) in the browser.
//
// A pure module (no imports, no side effects): ComfyUI loads every .js under web/ as an
// extension, and importing this one on its own does nothing. The box editor imports it.
//
// It mirrors core/trajectory.py, which stays authoritative (the backend validates and samples
// every queued prompt):
//   parseTrajectory(text) -> doc      strict JSON (repeated keys, NaN, 1.0-as-int are caught) and
//                                     the same rules and field paths as the Python validator
//   toCanonicalJSON(doc) -> text      byte-identical to Python's Trajectory.to_json()
//   prepareObject(obj).boxAt(frame)   the same interpolation as _sample_object (PCHIP "smooth")
//   objectColor(i)                    the same colours as core/preview.py object_colors
//
// A doc here is plain data: {version, frames, width, height, objects: [{id, prompt,
// keyframes: [{frame, box: [x0, y0, x1, y1], ease, visible}]}]}, with ease and visible always
// present (defaults "linear" and true).

export const VERSION = 1;
export const EASES = ["linear", "ease_in", "ease_out", "ease_in_out", "hold", "smooth"];
export const DOCUMENT = "document";
const BOX_HINT = "boxes are [x0, y0, x1, y1] in 0..1";
const TOP_FIELDS = ["version", "frames", "width", "height", "objects"];
const OBJECT_FIELDS = ["id", "prompt", "keyframes"];
const KEYFRAME_FIELDS = ["frame", "box", "ease", "visible"];

export class TrajectoryError extends Error {
  constructor(field, reason, { line = null, column = null } = {}) {
    super(`${field}: ${reason}`);
    this.name = "TrajectoryError";
    this.field = field;
    this.reason = reason;
    this.line = line;
    this.column = column;
  }
}

// ------------------------------------------------------------------------------------------
// Strict JSON reading (what Python's json.loads accepts, plus the facts JSON.parse loses)

/** A number written with a fraction or exponent whose value is whole (1.0, 2e1): Python reads
 * it as a float, which is not a valid frame count or keyframe frame. */
class FloatLiteral {
  constructor(value) {
    this.value = value;
  }
}

const DUPLICATES = new WeakMap(); // parsed object -> keys it saw more than once

function lineCol(text, pos) {
  let line = 1;
  let col = 1;
  for (let i = 0; i < pos && i < text.length; i++) {
    if (text[i] === "\n") {
      line += 1;
      col = 1;
    } else {
      col += 1;
    }
  }
  return [line, col];
}

/** JSON.parse with Python's extensions (NaN, Infinity, -Infinity) and bookkeeping of repeated
 * keys and whole-valued float literals. Errors name line and column like Python's. */
export function loadJSON(text, field = DOCUMENT) {
  let pos = 0;
  const fail = (msg) => {
    const [line, column] = lineCol(text, pos);
    const hint = text.trim() ? "check for a missing comma, quote or bracket there" : "the text is empty";
    throw new TrajectoryError(field, `malformed JSON at line ${line}, column ${column}: ${msg}; ${hint}`,
                              { line, column });
  };
  const ws = () => {
    while (pos < text.length && " \t\n\r".includes(text[pos])) pos++;
  };
  const value = () => {
    ws();
    if (pos >= text.length) fail("Expecting value");
    const c = text[pos];
    if (c === "{") return object();
    if (c === "[") return array();
    if (c === '"') return string();
    if (text.startsWith("true", pos)) { pos += 4; return true; }
    if (text.startsWith("false", pos)) { pos += 5; return false; }
    if (text.startsWith("null", pos)) { pos += 4; return null; }
    if (text.startsWith("NaN", pos)) { pos += 3; return NaN; }
    if (text.startsWith("Infinity", pos)) { pos += 8; return Infinity; }
    if (text.startsWith("-Infinity", pos)) { pos += 9; return -Infinity; }
    return number();
  };
  const number = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?/.exec(text.slice(pos, pos + 400));
    if (!m) fail("Expecting value");
    pos += m[0].length;
    const v = Number(m[0]);
    return (m[2] || m[3]) && Number.isInteger(v) ? new FloatLiteral(v) : v;
  };
  const string = () => {
    const start = pos;
    pos++;
    while (pos < text.length) {
      const c = text[pos];
      if (c === '"') {
        pos++;
        try {
          return JSON.parse(text.slice(start, pos));
        } catch {
          pos = start;
          fail("Invalid string");
        }
      }
      if (c === "\\") pos += 2;
      else if (c < " ") fail("Invalid control character");
      else pos++;
    }
    pos = start;
    fail("Unterminated string starting");
  };
  const array = () => {
    pos++;
    const out = [];
    ws();
    if (text[pos] === "]") { pos++; return out; }
    for (;;) {
      out.push(value());
      ws();
      if (text[pos] === ",") { pos++; continue; }
      if (text[pos] === "]") { pos++; return out; }
      fail("Expecting ',' delimiter");
    }
  };
  const object = () => {
    pos++;
    const out = Object.create(null);
    const dups = [];
    ws();
    if (text[pos] === "}") { pos++; DUPLICATES.set(out, dups); return out; }
    for (;;) {
      ws();
      if (text[pos] !== '"') fail("Expecting property name enclosed in double quotes");
      const key = string();
      ws();
      if (text[pos] !== ":") fail("Expecting ':' delimiter");
      pos++;
      const v = value();
      if (Object.prototype.hasOwnProperty.call(out, key)) dups.push(key);
      out[key] = v;
      ws();
      if (text[pos] === ",") { pos++; continue; }
      if (text[pos] === "}") { pos++; DUPLICATES.set(out, dups); return out; }
      fail("Expecting ',' delimiter");
    }
  };
  if (typeof text !== "string") throw new TrajectoryError(field, "must be JSON text");
  const v = value();
  ws();
  if (pos < text.length) fail("Extra data");
  return v;
}

// ------------------------------------------------------------------------------------------
// Validation (same rules, field paths and, as far as possible, wording as core/trajectory.py)

const isInt = (v) => typeof v === "number" && Number.isInteger(v);
const isNumber = (v) => typeof v === "number" || v instanceof FloatLiteral;
const numValue = (v) => (v instanceof FloatLiteral ? v.value : v);
const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof FloatLiteral);

/** A float as Python's repr (and so json.dumps) writes it. */
export function pyFloat(v) {
  if (Number.isNaN(v)) return "NaN";
  if (!Number.isFinite(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v === 0) return Object.is(v, -0) ? "-0.0" : "0.0";
  const a = Math.abs(v);
  if (a >= 1e16 || a < 1e-4) {
    const [mant, exp] = v.toExponential().split("e");
    const sign = exp[0] === "-" ? "-" : "+";
    const digits = exp.replace(/^[-+]/, "").padStart(2, "0");
    return `${mant}e${sign}${digits}`;
  }
  const s = String(v);
  return Number.isInteger(v) ? `${s}.0` : s;
}

/** A string as Python's json.dumps (ensure_ascii) writes it. */
export function pyString(s) {
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

const pyRepr = (s) => `'${s}'`;
const num = (v) => (v instanceof FloatLiteral ? pyFloat(v.value) : isInt(v) ? String(v) : pyFloat(v));

function describe(v) {
  if (typeof v === "boolean") return `${v} (a boolean)`;
  if (v === null || v === undefined) return "null";
  if (typeof v === "string") return `the string ${JSON.stringify(v)}`;
  if (Array.isArray(v)) return `a list of ${v.length}`;
  if (v instanceof FloatLiteral) return pyFloat(v.value);
  if (typeof v === "object") return "an object {...}";
  if (typeof v === "number") return num(v);
  return `a ${typeof v}`;
}

const join = (path, key) => (path ? `${path}.${key}` : String(key));

function checkFields(obj, path, allowed, required, what) {
  if (!isPlainObject(obj)) {
    throw new TrajectoryError(path || DOCUMENT, `must be a JSON object {...} (${what}), got ${describe(obj)}`);
  }
  for (const key of DUPLICATES.get(obj) || []) {
    throw new TrajectoryError(join(path, key), `field ${pyRepr(key)} appears more than once in ${what}; keep one`);
  }
  const unknown = Object.keys(obj).filter((k) => !allowed.includes(k));
  if (unknown.length) {
    const others = unknown.length > 1 ? ` (also unknown: ${unknown.slice(1).map(pyRepr).join(", ")})` : "";
    throw new TrajectoryError(join(path, unknown[0]), `unknown field ${pyRepr(unknown[0])}${others} in ${what}; ` +
                              `allowed fields are ${allowed.join(", ")}`);
  }
  for (const key of required) {
    if (!(key in obj)) throw new TrajectoryError(join(path, key), `missing; ${what} needs ${required.join(", ")}`);
  }
}

function checkInt(v, path, lo, hi = null, fix = "") {
  if (!isInt(v)) {
    if (isNumber(v) && !Number.isFinite(numValue(v))) {
      throw new TrajectoryError(path, `must be a finite whole number, got ${describe(v)}`);
    }
    throw new TrajectoryError(path, `must be a whole number, got ${describe(v)}${fix}`);
  }
  if (v < lo || (hi !== null && v > hi)) {
    const rng = hi === null ? `>= ${lo}` : `in ${lo}..${hi}`;
    throw new TrajectoryError(path, `must be ${rng}, got ${v}${fix}`);
  }
  return v;
}

function checkText(v, path, example) {
  if (typeof v !== "string") {
    throw new TrajectoryError(path, `must be a string, got ${describe(v)}; e.g. ${JSON.stringify(example)}`);
  }
  if (!v.trim()) throw new TrajectoryError(path, `must not be empty; e.g. ${JSON.stringify(example)}`);
  return v;
}

function checkBox(box, path) {
  if (!Array.isArray(box) || box.length !== 4) {
    throw new TrajectoryError(path, `must be a list of 4 numbers, got ${describe(box)}; ${BOX_HINT}`);
  }
  box.forEach((v, i) => {
    if (!isNumber(v)) throw new TrajectoryError(`${path}[${i}]`, `must be a number, got ${describe(v)}; ${BOX_HINT}`);
    const x = numValue(v);
    if (!Number.isFinite(x)) {
      throw new TrajectoryError(`${path}[${i}]`, `must be a finite number, got ${describe(v)}; ${BOX_HINT}`);
    }
    if (!(x >= 0 && x <= 1)) {
      throw new TrajectoryError(`${path}[${i}]`, `${num(v)} is outside 0..1; ${BOX_HINT} ` +
                                "(normalised to the frame size, not pixels)");
    }
  });
  const [x0, y0, x1, y1] = box.map(numValue);
  for (const [a, b, lo, hi, ra, rb] of [[x0, x1, "x0", "x1", box[0], box[2]], [y0, y1, "y0", "y1", box[1], box[3]]]) {
    if (a === b) {
      throw new TrajectoryError(path, `${lo} (${num(ra)}) must be < ${hi} (${num(rb)}): a zero-area box is not ` +
                                `allowed; ${BOX_HINT}`);
    }
    if (a > b) throw new TrajectoryError(path, `${lo} (${num(ra)}) must be < ${hi} (${num(rb)}); ${BOX_HINT}`);
  }
}

function checkKeyframes(kfs, path, frames) {
  if (!Array.isArray(kfs)) throw new TrajectoryError(path, `must be a list of keyframes, got ${describe(kfs)}`);
  if (!kfs.length) {
    throw new TrajectoryError(path, 'is empty; give at least one keyframe, e.g. {"frame": 0, "box": [0.1, 0.1, 0.4, 0.6]}');
  }
  let prev = null;
  kfs.forEach((kf, j) => {
    const p = `${path}[${j}]`;
    checkFields(kf, p, KEYFRAME_FIELDS, ["frame", "box"], "a keyframe");
    const frame = checkInt(kf.frame, `${p}.frame`, 0, frames - 1,
                           `; keyframe frames run from 0 to frames-1 = ${frames - 1}`);
    if (prev && frame === prev[1]) {
      throw new TrajectoryError(`${p}.frame`, `frame ${frame} already has a keyframe (${path}[${prev[0]}]); ` +
                                "an object may have one keyframe per frame: remove one");
    }
    if (prev && frame < prev[1]) {
      throw new TrajectoryError(`${p}.frame`, `frame ${frame} comes after frame ${prev[1]} (${path}[${prev[0]}]); ` +
                                "list keyframes in increasing frame order");
    }
    prev = [j, frame];
    checkBox(kf.box, `${p}.box`);
    const ease = "ease" in kf ? kf.ease : "linear";
    if (typeof ease !== "string" || !EASES.includes(ease)) {
      throw new TrajectoryError(`${p}.ease`, `unknown ease ${describe(ease)}; use one of ${EASES.join(", ")}`);
    }
    const visible = "visible" in kf ? kf.visible : true;
    if (typeof visible !== "boolean") {
      throw new TrajectoryError(`${p}.visible`, `must be true or false, got ${describe(visible)}`);
    }
  });
}

function checkDocument(data) {
  checkFields(data, "", TOP_FIELDS, ["frames", "width", "height", "objects"], "a trajectory document");
  const version = "version" in data ? data.version : VERSION;
  checkInt(version, "version", 1);
  if (version !== VERSION) {
    throw new TrajectoryError("version", `this pack reads version ${VERSION} documents, this one is version ` +
                              `${version}; update Box Director, or write it as version ${VERSION}`);
  }
  const frames = checkInt(data.frames, "frames", 1, null, "; frames is the number of pixel frames");
  checkInt(data.width, "width", 1, null, "; width is in pixels");
  checkInt(data.height, "height", 1, null, "; height is in pixels");
  const objects = data.objects;
  if (!Array.isArray(objects)) throw new TrajectoryError("objects", `must be a list of objects, got ${describe(objects)}`);
  if (!objects.length) {
    throw new TrajectoryError("objects", 'is empty; give at least one object, e.g. ' +
                              '{"id": "cat", "prompt": "a black cat", "keyframes": [...]}');
  }
  const ids = new Map();
  objects.forEach((obj, i) => {
    const p = `objects[${i}]`;
    checkFields(obj, p, OBJECT_FIELDS, OBJECT_FIELDS, "an object");
    const oid = checkText(obj.id, `${p}.id`, "cat");
    if (ids.has(oid)) {
      throw new TrajectoryError(`${p}.id`, `id ${pyRepr(oid)} is already used by objects[${ids.get(oid)}]; ids must be unique`);
    }
    ids.set(oid, i);
    checkText(obj.prompt, `${p}.prompt`, "a black cat");
    checkKeyframes(obj.keyframes, `${p}.keyframes`, frames);
  });
}

/** Parse and validate a document (JSON text or already-parsed data); throws TrajectoryError. */
export function parseTrajectory(textOrData) {
  const data = typeof textOrData === "string" ? loadJSON(textOrData) : textOrData;
  checkDocument(data);
  return {
    version: "version" in data ? data.version : VERSION,
    frames: data.frames,
    width: data.width,
    height: data.height,
    objects: data.objects.map((o) => ({
      id: o.id,
      prompt: o.prompt,
      keyframes: o.keyframes.map((k) => ({
        frame: k.frame,
        box: k.box.map(numValue),
        ease: "ease" in k ? k.ease : "linear",
        visible: "visible" in k ? k.visible : true,
      })),
    })),
  };
}

/** The first problem of a doc the editor holds (it may hold no objects), or null. */
export function validateDoc(doc) {
  try {
    checkDocument(toPlainData(doc));
    return null;
  } catch (e) {
    if (e instanceof TrajectoryError) return e;
    throw e;
  }
}

// ------------------------------------------------------------------------------------------
// Canonical JSON (exactly Python's Trajectory.to_json(pretty=True))

function keyframeData(kf) {
  const d = { frame: kf.frame, box: kf.box.slice() };
  if (kf.ease !== "linear") d.ease = kf.ease;
  if (kf.visible !== true) d.visible = kf.visible;
  return d;
}

function toPlainData(doc) {
  return {
    version: doc.version ?? VERSION, frames: doc.frames, width: doc.width, height: doc.height,
    objects: doc.objects.map((o) => ({ id: o.id, prompt: o.prompt, keyframes: o.keyframes.map(keyframeData) })),
  };
}

function keyframeJSON(kf) {
  const d = keyframeData(kf);
  let s = `{"frame": ${d.frame}, "box": [${d.box.map(pyFloat).join(", ")}]`;
  if ("ease" in d) s += `, "ease": ${pyString(d.ease)}`;
  if ("visible" in d) s += `, "visible": ${d.visible}`;
  return s + "}";
}

export function toCanonicalJSON(doc) {
  const lines = ["{"];
  for (const key of ["version", "frames", "width", "height"]) {
    const v = key === "version" ? doc.version ?? VERSION : doc[key];
    lines.push(`  "${key}": ${v},`);
  }
  lines.push('  "objects": [');
  doc.objects.forEach((o, i) => {
    lines.push(`    {"id": ${pyString(o.id)}, "prompt": ${pyString(o.prompt)}, "keyframes": [`);
    o.keyframes.forEach((kf, j) => {
      lines.push(`      ${keyframeJSON(kf)}${j < o.keyframes.length - 1 ? "," : ""}`);
    });
    lines.push(`    ]}${i < doc.objects.length - 1 ? "," : ""}`);
  });
  lines.push("  ]");
  lines.push("}");
  return lines.join("\n");
}

export function cloneDoc(doc) {
  return {
    version: doc.version ?? VERSION, frames: doc.frames, width: doc.width, height: doc.height,
    objects: doc.objects.map((o) => ({
      id: o.id, prompt: o.prompt,
      keyframes: o.keyframes.map((k) => ({ frame: k.frame, box: k.box.slice(), ease: k.ease, visible: k.visible })),
    })),
  };
}

// ------------------------------------------------------------------------------------------
// Sampling (core/trajectory.py _sample_object, frame by frame)

function ease(name, t) {
  switch (name) {
    case "linear": return t;
    case "ease_in": return t * t;
    case "ease_out": return 1.0 - (1.0 - t) * (1.0 - t);
    case "ease_in_out": return t * t * (3.0 - 2.0 * t);
    case "hold": return 0.0;
    default: throw new Error(`no closed form for ease ${name}`);
  }
}

/** The same easing curve as the backend, for drawing (smooth shows as ease_in_out here). */
export function easeCurve(name, t) {
  return ease(name === "smooth" ? "ease_in_out" : name, t);
}

function pchipTangents(frames, values, smooth) {
  const n = frames.length;
  const d = new Array(n).fill(0);
  for (let k = 1; k < n - 1; k++) {
    if (!(smooth[k - 1] && smooth[k])) continue;
    const h0 = frames[k] - frames[k - 1];
    const h1 = frames[k + 1] - frames[k];
    const a = (values[k] - values[k - 1]) / h0;
    const b = (values[k + 1] - values[k]) / h1;
    if (a * b <= 0.0) continue;
    const w1 = 2.0 * h1 + h0;
    const w2 = h1 + 2.0 * h0;
    d[k] = (w1 + w2) / (w1 / a + w2 / b);
  }
  return d;
}

function hermiteFraction(t, alpha, beta) {
  const t2 = t * t;
  const t3 = t * t * t;
  const s = (3.0 * t2 - 2.0 * t3) + alpha * (t3 - 2.0 * t2 + t) + beta * (t3 - t2);
  return Math.min(1.0, Math.max(0.0, s));
}

/** Precomputes one object's spline tangents; boxAt(frame) -> {box, visible, keyframe} where
 * keyframe is the index of the keyframe exactly at that frame or -1. */
export function prepareObject(obj) {
  const kfs = obj.keyframes;
  const n = kfs.length;
  const frames = kfs.map((k) => k.frame);
  const smooth = kfs.slice(0, -1).map((k) => k.ease === "smooth");
  let centres = null;
  let tangents = null;
  if (smooth.some(Boolean)) {
    centres = kfs.map((k) => [0.5 * (k.box[0] + k.box[2]), 0.5 * (k.box[1] + k.box[3])]);
    tangents = [0, 1].map((axis) => pchipTangents(frames, centres.map((c) => c[axis]), smooth));
  }
  function boxAt(f) {
    if (!n) return null;
    // last keyframe at or before f (the first one before it: hold)
    let last = -1;
    for (let i = 0; i < n; i++) if (frames[i] <= f) last = i;
    const exact = last >= 0 && frames[last] === f ? last : -1;
    if (last < 0) last = 0;
    const A = kfs[last];
    const result = { box: A.box.slice(), visible: A.visible, keyframe: exact, segment: last };
    if (last >= n - 1 || f <= frames[last]) return result;
    const a = frames[last];
    const b = frames[last + 1];
    if (b - a < 2) return result;
    const t = (f - a) / (b - a);
    const B = kfs[last + 1];
    let s;
    if (A.ease === "smooth") {
      const h = b - a;
      const fr = [0, 1].map((axis) => {
        const delta = centres[last + 1][axis] - centres[last][axis];
        let alpha = 0.0;
        let beta = 0.0;
        if (delta !== 0.0) {
          alpha = tangents[axis][last] * h / delta;
          beta = tangents[axis][last + 1] * h / delta;
        }
        return hermiteFraction(t, alpha, beta);
      });
      s = [fr[0], fr[1], fr[0], fr[1]];
    } else {
      const e = ease(A.ease, t);
      s = [e, e, e, e];
    }
    result.box = A.box.map((v, i) => (1.0 - s[i]) * v + s[i] * B.box[i]);
    return result;
  }
  return { boxAt };
}

/** [objects][frames] of {box, visible}: the whole document, as sample_boxes gives it. */
export function sampleDocument(doc) {
  return doc.objects.map((o) => {
    const p = prepareObject(o);
    const out = [];
    for (let f = 0; f < doc.frames; f++) {
      const r = p.boxAt(f);
      out.push({ box: r.box, visible: r.visible });
    }
    return out;
  });
}

// ------------------------------------------------------------------------------------------
// Colours (core/preview.py object_colors: colorsys.hsv_to_rgb with int() truncation)

function hsvToRgb(h, s, v) {
  if (s === 0.0) return [v, v, v];
  let i = Math.trunc(h * 6.0);
  const f = h * 6.0 - i;
  const p = v * (1.0 - s);
  const q = v * (1.0 - s * f);
  const t = v * (1.0 - s * (1.0 - f));
  i %= 6;
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i];
}

export function objectColor(i) {
  const [r, g, b] = hsvToRgb((0.08 + i * 0.618034) % 1.0, 0.85, 1.0);
  return [Math.trunc(r * 255), Math.trunc(g * 255), Math.trunc(b * 255)];
}

export function objectColorCss(i, alpha = 1) {
  const [r, g, b] = objectColor(i);
  return alpha === 1 ? `rgb(${r}, ${g}, ${b})` : `rgba(${r}, ${g}, ${b}, ${alpha})`;
}
