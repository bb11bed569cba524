// Box Director: puts the box editor (web/lib/box_editor.js) on the BBox Trajectory node.
//
// It is a DOM widget (addDOMWidget) with pointer events on its own element, so it works in the
// classic LiteGraph canvas and in the Vue "Nodes 2.0" renderer. The node's `trajectory` STRING
// widget stays the only state the backend needs (hidden here; the editor's JSON button shows
// it): a queued API prompt behaves exactly like the UI. The background image is a reference in
// node.properties (saved in the UI workflow only), never a base64 copy.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { BoxEditor } from "./lib/box_editor.js";

const NODE_ID = "BoxDirector.BBoxTrajectory";
const BG_PROP = "boxdirector_background";
const UPLOAD_SUBFOLDER = "boxdirector";

const editors = new Set(); // live editors, to redraw when an image finishes loading
const images = new Map(); // url -> HTMLImageElement

function loadImage(url) {
  let img = images.get(url);
  if (!img) {
    img = new Image();
    img.addEventListener("load", () => editors.forEach((e) => e.invalidate("stage", "panel")));
    img.addEventListener("error", () => {
      img.failed = true;
      editors.forEach((e) => e.invalidate("stage", "panel"));
    });
    img.src = url;
    images.set(url, img);
  }
  return img;
}

function viewUrl({ filename, subfolder = "", type = "input" }) {
  const q = new URLSearchParams({ filename, type, subfolder });
  return api.apiURL(`/view?${q.toString()}`);
}

/** "sub/name.png [input]" (a LoadImage value) -> {filename, subfolder, type}. */
function parseImageValue(value) {
  let type = "input";
  const m = /^(.*?)\s*\[(input|output|temp)\]$/.exec(value);
  if (m) {
    value = m[1];
    type = m[2];
  }
  const cut = value.lastIndexOf("/");
  return cut >= 0 ? { filename: value.slice(cut + 1), subfolder: value.slice(0, cut), type }
                  : { filename: value, subfolder: "", type };
}

const clampIndex = (i, n) => Math.min(n - 1, Math.max(0, i));

/** A frame of whatever feeds the node's IMAGE input, without running the graph when possible:
 * the images the upstream node shows (LoadImage's preview, a preview node's batch), its last
 * outputs, or a LoadImage-style "image" widget. Batches follow the editor's current frame. */
function upstreamBackground(node, frame) {
  const slot = node.inputs?.findIndex((i) => i.name === "image") ?? -1;
  if (slot < 0 || node.inputs[slot].link == null) return null;
  let src = node.getInputNode?.(slot);
  for (let n = 0; src && src.type === "Reroute" && n < 32; n++) src = src.getInputNode?.(0);
  if (!src) return null;
  const title = src.title || src.type;
  const imgs = (src.imgs || []).filter((i) => i instanceof HTMLImageElement);
  if (imgs.length) {
    const i = clampIndex(frame, imgs.length);
    return { image: imgs[i], label: `input: ${title}${imgs.length > 1 ? ` [${i + 1}/${imgs.length}]` : ""}` };
  }
  const out = app.nodeOutputs?.[String(src.id)]?.images;
  if (out?.length) {
    const i = clampIndex(frame, out.length);
    return { image: loadImage(viewUrl(out[i])), label: `input: ${title} [${i + 1}/${out.length}]` };
  }
  const w = src.widgets?.find((x) => x.name === "image" && typeof x.value === "string" && x.value);
  if (w) {
    const ref = parseImageValue(w.value);
    return { image: loadImage(viewUrl(ref)), label: `input: ${ref.filename}` };
  }
  return { image: null, label: `input: ${title} (no picture yet: run it, or paste / drop an image)` };
}

function storedBackground(node) {
  const ref = node.properties?.[BG_PROP];
  if (!ref?.filename) return null;
  const img = loadImage(viewUrl(ref));
  return { image: img, label: img.failed ? `${ref.filename} (missing)` : ref.filename };
}

async function uploadImage(file) {
  const body = new FormData();
  const name = file.name && file.name !== "image.png" ? file.name : `pasted_${Date.now()}.png`;
  body.append("image", file, name);
  body.append("subfolder", UPLOAD_SUBFOLDER);
  body.append("type", "input");
  const res = await api.fetchApi("/upload/image", { method: "POST", body });
  if (res.status !== 200) throw new Error(`${res.status} ${res.statusText}`);
  const data = await res.json();
  return { filename: data.name, subfolder: data.subfolder || "", type: data.type || "input" };
}

// The server's validation errors of the last queued prompt, read from the /prompt answer itself:
// newer frontends send no promptQueued event when validation fails, and app.lastNodeErrors is
// deprecated there. fetchApi, not queuePrompt, is wrapped so that no frame of this file is in the
// stack of the error the frontend logs for a refused prompt.
let lastNodeErrors = {};
const queueListeners = new Set();

function watchQueue() {
  if (api.boxdirectorQueueWatch || typeof api.fetchApi !== "function") return;
  const fetchApi = api.fetchApi;
  api.boxdirectorQueueWatch = true;
  const publish = (errors) => {
    lastNodeErrors = errors || {};
    for (const listener of queueListeners) listener();
  };
  api.fetchApi = async function (route, options, ...rest) {
    const res = await fetchApi.call(this, route, options, ...rest);
    if (route === "/prompt" && String(options?.method || "").toUpperCase() === "POST") {
      res.clone().json().then((body) => publish(body?.node_errors), () => publish({}));
    }
    return res;
  };
}

function nodeErrorText(node) {
  const errors = lastNodeErrors[String(node.id)]?.errors;
  if (!errors?.length) return null;
  // ComfyUI repeats a custom validation message once per declared input, each prefixed with the
  // input's name ("frames - trajectory: ..."): show each message once.
  const messages = errors.map((e) => String(e.details || e.message || "").replace(/^\w+ - /, "")).filter(Boolean);
  return [...new Set(messages)].join("\n");
}

function markChanged() {
  try {
    app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
  } catch {
    /* the change tracker is a convenience: the widget value is what is saved */
  }
}

function attachEditor(node) {
  const textWidget = node.widgets?.find((w) => w.name === "trajectory");
  if (!textWidget || node.boxEditor) return;
  // The raw text stays the node's value (saved, queued), hidden in both renderers.
  textWidget.hidden = true;
  textWidget.options = textWidget.options || {};
  textWidget.options.hidden = true;
  // The canvas renderer still lays out hidden DOM widgets; give the textarea no height there.
  textWidget.computeLayoutSize = () => ({ minHeight: 0, maxHeight: 0, minWidth: 0 });

  const widgetValue = (name) => Number(node.widgets?.find((w) => w.name === name)?.value) || 0;
  const host = {
    readText: () => String(textWidget.value ?? ""),
    writeText: (text) => {
      textWidget.value = text;
      node.setDirtyCanvas?.(true, false);
      markChanged();
    },
    overrides: () => ({ frames: widgetValue("frames"), width: widgetValue("width"), height: widgetValue("height") }),
    background: (frame) => {
      const up = upstreamBackground(node, frame);
      if (up?.image) return up;
      return storedBackground(node) || up;
    },
    uploadBackground: async (file) => {
      node.properties = node.properties || {};
      node.properties[BG_PROP] = await uploadImage(file);
      markChanged();
    },
    clearBackground: () => {
      if (node.properties) delete node.properties[BG_PROP];
      editor.invalidate();
      markChanged();
    },
    linked: () => node.inputs?.find((i) => i.name === "trajectory")?.link != null,
  };
  const editor = new BoxEditor(host);
  node.boxEditor = editor;
  editors.add(editor);

  const widget = node.addDOMWidget("box_editor", "boxdirector_box_editor", editor.element, {
    serialize: false, // no entry in widgets_values or in the API prompt
    hideOnZoom: true,
    getValue: () => undefined,
    setValue: () => {},
    getMinHeight: () => 400,
  });
  widget.serialize = false;

  // Text that arrives from outside (workflow load, another extension, graph undo) is read back.
  const callback = textWidget.callback;
  textWidget.callback = function (...args) {
    const r = callback?.apply(this, args);
    editor.load(textWidget.value);
    return r;
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const r = onConfigure?.apply(this, args);
    editor.load(textWidget.value, { resetHistory: true });
    return r;
  };
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const r = onConnectionsChange?.apply(this, args);
    editor.invalidate();
    return r;
  };
  // Other override widgets change the aspect and the status line.
  for (const name of ["frames", "width", "height"]) {
    const w = node.widgets.find((x) => x.name === name);
    if (!w) continue;
    const cb = w.callback;
    w.callback = function (...args) {
      const r = cb?.apply(this, args);
      editor.invalidate();
      return r;
    };
  }

  // Server-side validation and execution errors of this node, shown in the editor.
  watchQueue();
  const onQueued = () => editor.setBackendError(nodeErrorText(node));
  const onError = (e) => {
    if (String(e.detail?.node_id) === String(node.id)) editor.setBackendError(e.detail.exception_message || "execution failed");
  };
  const onExecuted = (e) => {
    if (String(e.detail?.node) === String(node.id)) editor.setBackendError(null);
    editor.invalidate("stage", "panel"); // an upstream preview may have arrived
  };
  queueListeners.add(onQueued);
  api.addEventListener("execution_error", onError);
  api.addEventListener("executed", onExecuted);
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    queueListeners.delete(onQueued);
    api.removeEventListener("execution_error", onError);
    api.removeEventListener("executed", onExecuted);
    editors.delete(editor);
    editor.destroy();
    return onRemoved?.apply(this, args);
  };

  const [w, h] = node.size || [0, 0];
  node.setSize?.([Math.max(w, 560), Math.max(h, 780)]);
}

app.registerExtension({
  name: "boxdirector.bboxEditor",
  setup() {
    watchQueue();
  },
  nodeCreated(node) {
    if (node?.comfyClass === NODE_ID || node?.type === NODE_ID) attachEditor(node);
  },
});
