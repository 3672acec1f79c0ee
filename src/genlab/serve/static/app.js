// genlab explorer: one view per run, built from the run's RunInfo "modes" (never from its family name), talking
// only to the JSON endpoints under /api/ (see the serve contract). No framework and no build step, so the page works
// offline straight from the package. Decodes follow "newest wins": at most one request in flight per view; while
// it runs only the latest wanted code is remembered, and it is sent when the answer arrives, so dragging a slider
// never piles requests up behind a slow model.
"use strict";

const SLIDER_LIMIT = 3; // sliders and the pad span [-3, 3]: a standard normal prior lies well inside
const NOISE_SLIDERS = 16; // GANs: sliders over the first dims of the noise only
const STRIP_COUNT = 16; // test images per page of the strip
const SELECT_MAX = 256; // interpolation pickers list the first test images

// --- small helpers ---

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

class ApiError extends Error {}

/** One JSON request; a non-2xx answer throws the server's {"error"} line so the user sees what was wrong. */
async function request(method, path, body, signal) {
  const options = { method, signal };
  if (body !== undefined) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(body);
  }
  const res = await fetch(path, options);
  const text = await res.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch (err) {
    data = null;
  }
  if (!res.ok) {
    throw new ApiError(data && data.error ? data.error : `${res.status} ${res.statusText || "request failed"}`);
  }
  if (data === null) throw new ApiError(`${path} answered something that is not JSON`);
  return data;
}

/** Set an image's source and resolve once it has loaded (the page is "ready" when every view has its first). */
function showImage(img, src) {
  return new Promise((resolve) => {
    if (img.getAttribute("src") === src && img.complete) {
      resolve();
      return;
    }
    const done = () => {
      img.removeEventListener("load", done);
      img.removeEventListener("error", done);
      resolve();
    };
    img.addEventListener("load", done);
    img.addEventListener("error", done);
    img.src = src;
  });
}

function section(title, cls, ...children) {
  return el("section", { class: `card ${cls}` }, el("h3", { text: title }), ...children);
}

function labelled(text, control, cls = "field") {
  return el("label", { class: cls }, el("span", { class: "field-name", text }), control);
}

function fmt(v, digits = 2) {
  return Number(v).toFixed(digits);
}

function randomSeed() {
  return Math.floor(Math.random() * 2 ** 31);
}

// --- the status line ---

const status = {
  node: null,
  ready: false,
  errored: false,
  set(text, cls) {
    this.node.textContent = text;
    this.node.className = cls || "";
  },
  error(err) {
    const message = err instanceof Error ? err.message : String(err);
    this.errored = true;
    this.set(`error: ${message.split("\n")[0]}`, "error");
  },
  /** A request went through: after an error the line goes back to "ready" (once the page has loaded). */
  ok() {
    if (this.ready && this.errored) {
      this.errored = false;
      this.set("ready", "ready");
    }
  },
};

// --- side by side: the same latent moves on every linked view with the same latent size ---

const hub = {
  views: [],
  linked() {
    const box = document.getElementById("link-views");
    return this.views.length > 1 && box && box.checked;
  },
  moved(source) {
    if (!this.linked()) return;
    for (const view of this.views) {
      if (view !== source && view.latent && view.latentDim === source.latentDim) {
        view.setCode(source.z, { broadcast: false });
      }
    }
  },
};

// --- one run's view ---

class View {
  constructor(info) {
    this.info = info;
    this.id = info.id;
    this.base = `/api/runs/${encodeURIComponent(info.id)}`;
    const modes = info.modes || [];
    const abilities = info.abilities || [];
    this.modes = modes;
    this.latent = modes.includes("latent") || modes.includes("noise");
    this.noise = modes.includes("noise") && !modes.includes("latent");
    this.canEncode = modes.includes("latent");
    this.conditional = modes.includes("conditional") && info.num_classes > 0;
    this.transfer = this.conditional && (this.canEncode || abilities.includes("style transfer"));
    this.encoder = modes.includes("encoder");
    this.autoregressive = modes.includes("autoregressive");
    this.text = modes.includes("text") || info.kind === "text";
    this.hasImages = info.kind !== "text" && info.test_count > 0;
    this.latentDim = info.latent_dim || 0;
    this.z = new Array(this.latentDim).fill(0);
    this.initialCode = this.z.slice();
    this.label = this.conditional ? 0 : null;
    this.picked = 0; // the test image that encode, neighbours and completion work on
    this.pickedB = this.hasImages && info.test_count > 1 ? 1 : 0;
    this.stripOffset = 0;
    this.decoding = false;
    this.wanted = false;
    this.animTimer = null;
    this.stream = null;
    this.mask = null;
    this.maskImage = null;
    this.root = el("div", { class: "view", dataset: { run: info.id } });
    this.build();
  }

  post(path, body, signal) {
    return request("POST", `${this.base}/${path}`, body, signal);
  }

  // ----- building -----

  build() {
    const info = this.info;
    const chips = [...new Set([info.family, info.dataset, ...this.modes].filter(Boolean))];
    this.root.append(el("div", { class: "view-head" },
      el("h2", { text: info.name, title: `run ${info.id}` }),
      el("div", { class: "chips" }, chips.map((c) => el("span", { class: "chip", text: c })))));
    const grid = el("div", { class: "cards" });
    this.root.append(grid);
    this.mainImage = el("img", { class: "main-image", alt: `current image of ${info.name}` });
    if (this.latent) grid.append(this.buildExplore());
    if (this.autoregressive) grid.append(this.buildAutoregressive());
    if (this.conditional && !this.latent && !this.autoregressive) grid.append(this.buildClasses());
    // the test strip and the interpolation stack in one column beside the explorer, so they share its height
    const stack = el("div", { class: "stack" });
    if (this.hasImages && (this.canEncode || this.encoder || this.autoregressive)) stack.append(this.buildStrip());
    if (this.canEncode) stack.append(this.buildInterpolation());
    if (stack.children.length) grid.append(stack);
    if (this.transfer) grid.append(this.buildTransfer());
    if (this.encoder) grid.append(this.buildNeighbours());
    if (this.text) grid.append(...this.buildText());
    if (!grid.children.length) {
      grid.append(section("Nothing to explore", "empty",
        el("p", { text: "This run offers none of the explorer's modes." })));
    }
  }

  buildClasses() {
    this.classButtons = el("div", { class: "class-buttons", role: "group", "aria-label": "class" });
    const names = this.info.class_names || [];
    for (let k = 0; k < this.info.num_classes; k++) {
      const btn = el("button", {
        class: `class-btn${k === this.label ? " active" : ""}`, type: "button", dataset: { label: String(k) },
        text: names[k] !== undefined ? String(names[k]) : String(k), title: `class ${k}`,
        onclick: () => this.chooseClass(k),
      });
      this.classButtons.append(btn);
    }
    return el("div", { class: "classes" }, el("span", { class: "field-name", text: "class" }), this.classButtons);
  }

  buildExplore() {
    const info = this.info;
    this.randomBtn = el("button", { class: "random", type: "button", text: "Random", onclick: () => this.random() });
    this.resetBtn = el("button", { class: "reset", type: "button", text: "Reset", onclick: () => this.reset() });
    this.codeNote = el("p", { class: "note code-note", text: this.noise ? "noise draw" : "code: zeros" });
    const left = el("div", { class: "explore-left" },
      el("div", { class: "image-frame" }, this.mainImage),
      this.codeNote,
      el("div", { class: "buttons" }, this.randomBtn, this.resetBtn));
    if (this.conditional) left.append(this.buildClasses());

    // sliders, ordered as the server lists the dims (by KL, largest first)
    let dims = (info.dims && info.dims.length ? info.dims : this.z.map((_, i) => ({ index: i, kl: null, active: true })));
    if (this.noise) dims = dims.slice(0, NOISE_SLIDERS);
    this.dims = dims;
    this.sliders = new Map();
    const list = el("div", { class: "sliders" });
    for (const dim of dims) {
      const input = el("input", {
        type: "range", min: -SLIDER_LIMIT, max: SLIDER_LIMIT, step: 0.01, value: 0,
        class: `dim-slider${dim.active === false ? " inactive" : ""}`, dataset: { dim: String(dim.index) },
        "aria-label": `latent dim ${dim.index}`,
      });
      const value = el("output", { class: "dim-value", text: fmt(0) });
      input.addEventListener("input", () => {
        this.z[dim.index] = Number(input.value);
        value.textContent = fmt(input.value);
        this.codeNote.textContent = "code: edited";
        this.drawPad();
        this.wantDecode();
        hub.moved(this);
      });
      const kl = dim.kl === null || dim.kl === undefined ? "" : `KL ${fmt(dim.kl, 3)}`;
      const row = el("div", { class: `slider-row${dim.active === false ? " inactive" : ""}` },
        el("span", { class: "dim-name", text: `z${dim.index + 1}` }), input, value,
        el("span", { class: "dim-kl", text: kl }),
        dim.active === false ? el("span", { class: "inactive-note", text: "inactive", title: "KL near zero: the "
          + "decoder ignores this dim" }) : null);
      this.sliders.set(dim.index, { input, value });
      list.append(row);
    }
    const inactive = dims.filter((d) => d.active === false).length;
    const heading = this.noise
      ? `Noise (first ${dims.length} of ${this.latentDim} dims)`
      : `Latent dims${dims.some((d) => d.kl !== null && d.kl !== undefined) ? " by KL" : ""} `
        + `(${this.latentDim}${inactive ? `, ${inactive} inactive` : ""})`;

    // the 2-D pad over two chosen dims (the two with the largest KL by default)
    this.pad = el("canvas", { class: "pad", width: 160, height: 160, "aria-label": "2-D pad over two dims" });
    this.padX = el("select", { class: "pad-x", "aria-label": "pad x dim" });
    this.padY = el("select", { class: "pad-y", "aria-label": "pad y dim" });
    for (const dim of dims) {
      this.padX.append(el("option", { value: dim.index, text: `z${dim.index + 1}` }));
      this.padY.append(el("option", { value: dim.index, text: `z${dim.index + 1}` }));
    }
    if (dims.length) this.padX.value = String(dims[0].index);
    this.padY.value = String(dims[Math.min(1, dims.length - 1)] ? dims[Math.min(1, dims.length - 1)].index : 0);
    this.padX.addEventListener("change", () => this.drawPad());
    this.padY.addEventListener("change", () => this.drawPad());
    this.bindPad();
    const padBox = el("div", { class: "pad-box" }, this.pad,
      el("div", { class: "pad-axes" }, labelled("x", this.padX), labelled("y", this.padY)));

    const right = el("div", { class: "explore-right" },
      el("div", { class: "sub", text: heading }), list,
      el("div", { class: "sub", text: "2-D pad (drag)" }), padBox);
    return section(this.noise ? "Generator" : "Latent space", "explore-card", el("div", { class: "explore" }, left, right));
  }

  buildStrip() {
    this.strip = el("div", { class: "test-strip" });
    this.stripInfo = el("span", { class: "note" });
    const prev = el("button", { type: "button", class: "strip-prev small", text: "‹", title: "previous test images",
      onclick: () => this.loadStrip(Math.max(0, this.stripOffset - STRIP_COUNT)) });
    const next = el("button", { type: "button", class: "strip-next small", text: "›", title: "next test images",
      onclick: () => {
        if (this.stripOffset + STRIP_COUNT < this.info.test_count) this.loadStrip(this.stripOffset + STRIP_COUNT);
      } });
    let hint = "click: pick";
    if (this.canEncode) hint = "click: encode into the sliders (A) · shift-click: B";
    else if (this.autoregressive) hint = "click: pick the image to complete";
    else if (this.encoder) hint = "click: pick the image whose neighbours to find";
    return section("Test images", "strip-card",
      el("div", { class: "strip-nav" }, prev, this.stripInfo, next, el("span", { class: "hint", text: hint })),
      this.strip);
  }

  buildInterpolation() {
    const count = Math.min(this.info.test_count, SELECT_MAX);
    this.interpA = el("select", { class: "interp-a", "aria-label": "image A" });
    this.interpB = el("select", { class: "interp-b", "aria-label": "image B" });
    for (let i = 0; i < count; i++) {
      this.interpA.append(el("option", { value: i, text: `#${i}` }));
      this.interpB.append(el("option", { value: i, text: `#${i}` }));
    }
    this.interpA.value = String(this.picked);
    this.interpB.value = String(this.pickedB);
    this.interpA.addEventListener("change", () => this.markStrip());
    this.interpB.addEventListener("change", () => this.markStrip());
    this.interpSteps = el("input", { class: "interp-steps", type: "number", min: 2, max: 64, value: 8,
      "aria-label": "steps" });
    this.interpMode = el("select", { class: "interp-mode", "aria-label": "interpolation" },
      el("option", { value: "linear", text: "linear" }), el("option", { value: "spherical", text: "spherical" }));
    this.interpGo = el("button", { class: "interp-go primary", type: "button", text: "Interpolate",
      onclick: () => this.interpolate() });
    this.interpFrames = el("div", { class: "interp-frames" });
    this.interpAnim = el("img", { class: "interp-anim", alt: "interpolation animation" });
    return section("Interpolate", "interp-card",
      el("div", { class: "controls" }, labelled("A", this.interpA), labelled("B", this.interpB),
        labelled("steps", this.interpSteps), labelled("path", this.interpMode), this.interpGo),
      el("div", { class: "interp-out" }, el("div", { class: "anim-frame" }, this.interpAnim), this.interpFrames));
  }

  buildTransfer() {
    this.transferGo = el("button", { class: "transfer-go primary", type: "button", text: "Every class",
      onclick: () => this.transferAll() });
    this.transferGrid = el("div", { class: "transfer-grid" });
    return section("Style transfer", "transfer-card",
      el("p", { class: "note", text: "The current code decoded under every class." }),
      el("div", { class: "controls" }, this.transferGo), this.transferGrid);
  }

  buildNeighbours() {
    this.neighboursGo = el("button", { class: "neighbours-go primary", type: "button", text: "Nearest images",
      onclick: () => this.neighbours() });
    this.neighboursK = el("input", { class: "neighbours-k", type: "number", min: 1, max: 32, value: 8,
      "aria-label": "neighbours" });
    this.neighboursQuery = el("img", { class: "neighbours-query", alt: "query image" });
    this.neighboursList = el("div", { class: "neighbours" });
    return section("Nearest training images", "neighbours-card",
      el("p", { class: "note", text: "In the encoder's feature space (L2), for the picked test image." }),
      el("div", { class: "controls" }, labelled("k", this.neighboursK), this.neighboursGo),
      el("div", { class: "neighbours-out" }, this.neighboursQuery, this.neighboursList));
  }

  buildAutoregressive() {
    const t = this.info.temperature ?? 1;
    this.arTemperature = el("input", { class: "ar-temperature", type: "range", min: 0, max: 2, step: 0.05,
      value: t, "aria-label": "temperature" });
    const tValue = el("output", { text: fmt(t) });
    this.arTemperature.addEventListener("input", () => { tValue.textContent = fmt(this.arTemperature.value); });
    this.arN = el("input", { class: "ar-n", type: "number", min: 1, max: 16, value: 4, "aria-label": "samples" });
    this.arHide = el("input", { class: "ar-hide", type: "number", min: 0.05, max: 0.95, step: 0.05, value: 0.5,
      "aria-label": "hidden fraction" });
    this.arHide.addEventListener("input", () => this.drawMask());
    this.arSample = el("button", { class: "ar-sample primary", type: "button", text: "Sample",
      onclick: () => this.arRun("sample") });
    this.arComplete = el("button", { class: "ar-complete primary", type: "button", text: "Complete",
      onclick: () => this.arRun("complete") });
    this.arCancel = el("button", { class: "ar-cancel", type: "button", text: "Cancel", disabled: true,
      onclick: () => { if (this.stream) this.stream.abort(); } });
    this.arProgress = el("progress", { class: "ar-progress", max: 1, value: 0 });
    this.arNote = el("span", { class: "note ar-note", text: "idle" });
    this.arResult = el("div", { class: "ar-result" });
    this.maskCanvas = el("canvas", { class: "mask-canvas", width: 160, height: 160,
      "aria-label": "mask: drag to paint hidden pixels" });
    this.maskNote = el("p", { class: "note mask-note" });
    const clear = el("button", { class: "mask-clear small", type: "button", text: "Clear mask",
      onclick: () => { this.resetMask(); this.drawMask(); } });
    this.bindMask();
    const grid = el("div", { class: "explore" },
      el("div", { class: "explore-left" }, el("div", { class: "image-frame" }, this.mainImage),
        el("p", { class: "note main-note", text: "the picked test image" })),
      el("div", { class: "explore-right" },
        el("div", { class: "controls" }, labelled("temperature", el("span", { class: "range" },
          this.arTemperature, tValue)), labelled("n", this.arN)),
        this.conditional ? this.buildClasses() : null,
        el("div", { class: "controls" }, this.arSample, labelled("hide", this.arHide), this.arComplete,
          this.arCancel),
        el("div", { class: "progress-row" }, this.arProgress, this.arNote),
        el("div", { class: "mask-box" }, this.maskCanvas,
          el("div", {}, el("div", { class: "sub", text: "Mask over the picked image" }), this.maskNote, clear))));
    return section("Draw pixel by pixel", "ar-card", grid,
      el("div", { class: "sub", text: "Result" }), this.arResult);
  }

  buildText() {
    const t = this.info.temperature ?? 1;
    this.textTemperature = el("input", { class: "text-temperature", type: "range", min: 0, max: 2, step: 0.05,
      value: t, "aria-label": "temperature" });
    const tValue = el("output", { text: fmt(t) });
    this.textTemperature.addEventListener("input", () => { tValue.textContent = fmt(this.textTemperature.value); });
    this.textSample = el("button", { class: "text-sample primary", type: "button", text: "Sample",
      onclick: () => this.sampleText() });
    this.textLines = el("ol", { class: "text-lines lines" });
    // 64 characters is the server's limit; the model's own length rule (which may not count punctuation) is
    // the server's to check, and its one-line refusal shows in the status line
    this.textFirst = el("input", { class: "text-first", type: "text", maxlength: 64,
      placeholder: "first line", "aria-label": "first line" });
    this.textLast = el("input", { class: "text-last", type: "text", maxlength: 64,
      placeholder: "last line", "aria-label": "last line" });
    this.textSteps = el("input", { class: "text-steps", type: "number", min: 2, max: 32, value: 8,
      "aria-label": "steps" });
    this.textInterpGo = el("button", { class: "text-interp-go primary", type: "button", text: "Interpolate",
      onclick: () => this.interpolateText() });
    this.textUnknown = el("div", { class: "note text-unknown" });
    this.textInterpLines = el("ol", { class: "lines" });
    this.textInterp = el("div", { class: "text-interp" }, this.textUnknown, this.textInterpLines);
    return [
      section("Sample lines", "text-card",
        el("div", { class: "controls" }, labelled("temperature", el("span", { class: "range" },
          this.textTemperature, tValue)), this.textSample),
        this.textLines),
      section("Walk between two lines", "text-card",
        el("div", { class: "text-inputs" }, labelled("first", this.textFirst), labelled("last", this.textLast)),
        el("div", { class: "controls" }, labelled("steps", this.textSteps), this.textInterpGo),
        this.textInterp),
    ];
  }

  // ----- start: the first image (or lines) of the view -----

  async start() {
    const firsts = [];
    if (this.hasImages && this.strip) firsts.push(this.loadStrip(0));
    if (this.latent) {
      if (this.noise) {
        firsts.push(this.random(0).then(() => { this.initialCode = this.z.slice(); }));
      } else {
        this.drawPad();
        firsts.push(this.decodeNow());
      }
    } else if (this.autoregressive && this.hasImages) {
      firsts.push(this.pick(0));
    } else if (this.encoder && this.hasImages) {
      firsts.push(this.pickForNeighbours(0));
    }
    if (this.text) firsts.push(this.sampleText(true));
    await Promise.all(firsts);
  }

  // ----- latent code -----

  /** Set the whole code (encode, random, reset, or a linked view's move) and redraw sliders, pad and image. */
  setCode(z, { decode = true, broadcast = true, note = null } = {}) {
    for (let i = 0; i < this.latentDim; i++) this.z[i] = Number(z[i] ?? 0);
    for (const [index, { input, value }] of this.sliders) {
      input.value = String(Math.max(-SLIDER_LIMIT, Math.min(SLIDER_LIMIT, this.z[index])));
      value.textContent = fmt(this.z[index]);
    }
    if (note) this.codeNote.textContent = note;
    this.drawPad();
    if (decode) this.wantDecode();
    if (broadcast) hub.moved(this);
  }

  /** Newest wins: remember that the current code is wanted; send it now unless a decode is in flight. */
  wantDecode() {
    this.wanted = true;
    if (!this.decoding) this.decodeLoop();
  }

  async decodeLoop() {
    this.decoding = true;
    try {
      while (this.wanted) {
        this.wanted = false;
        const body = { z: this.z.slice(), label: this.label };
        const res = await this.post("decode", body);
        // overtaken on the server by another page's request for this run: ask again unless a newer code waits
        if (res.superseded) { this.wanted = true; continue; }
        if (!this.wanted) await showImage(this.mainImage, res.image);
        status.ok();
      }
    } catch (err) {
      this.wanted = false;
      status.error(err);
    } finally {
      this.decoding = false;
    }
  }

  /** The first decode of the page: resolves when the image has loaded. */
  async decodeNow() {
    try {
      const res = await this.post("decode", { z: this.z.slice(), label: this.label });
      if (!res.superseded) await showImage(this.mainImage, res.image);
    } catch (err) {
      status.error(err);
    }
  }

  async random(seed) {
    try {
      const s = seed ?? randomSeed();
      const res = await this.post("random", { seed: s });
      this.setCode(res.z, { decode: this.conditional, note: `random draw (seed ${s})` });
      if (!this.conditional) await showImage(this.mainImage, res.image);
      status.ok();
    } catch (err) {
      status.error(err);
    }
  }

  reset() {
    this.setCode(this.initialCode, { note: this.noise ? "the first draw" : "code: zeros" });
  }

  chooseClass(k) {
    this.markClass(k);
    if (this.latent) this.wantDecode();
  }

  /** Make class k the view's label and its button the active one, without decoding. */
  markClass(k) {
    this.label = k;
    for (const btn of this.classButtons.querySelectorAll(".class-btn")) {
      btn.classList.toggle("active", Number(btn.dataset.label) === k);
    }
  }

  // ----- the 2-D pad -----

  padDims() {
    return [Number(this.padX.value), Number(this.padY.value)];
  }

  drawPad() {
    if (!this.pad) return;
    const ctx = this.pad.getContext("2d");
    const { width: w, height: h } = this.pad;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#f7f9fc";
    ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = "#d5dbe5";
    ctx.lineWidth = 1;
    for (let k = -2; k <= 2; k++) {
      const x = Math.round(((k + SLIDER_LIMIT) / (2 * SLIDER_LIMIT)) * w) + 0.5;
      const y = Math.round(((k + SLIDER_LIMIT) / (2 * SLIDER_LIMIT)) * h) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke();
    }
    ctx.strokeStyle = "#9aa6b8";
    ctx.beginPath(); ctx.moveTo(w / 2 + 0.5, 0); ctx.lineTo(w / 2 + 0.5, h); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, h / 2 + 0.5); ctx.lineTo(w, h / 2 + 0.5); ctx.stroke();
    const [dx, dy] = this.padDims();
    const clamp = (v) => Math.max(-SLIDER_LIMIT, Math.min(SLIDER_LIMIT, v || 0));
    const px = ((clamp(this.z[dx]) + SLIDER_LIMIT) / (2 * SLIDER_LIMIT)) * w;
    const py = ((SLIDER_LIMIT - clamp(this.z[dy])) / (2 * SLIDER_LIMIT)) * h;
    ctx.fillStyle = "#2f6fd6";
    ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.stroke();
  }

  bindPad() {
    let dragging = false;
    const move = (event) => {
      const rect = this.pad.getBoundingClientRect();
      const fx = Math.max(0, Math.min(1, (event.clientX - rect.left) / rect.width));
      const fy = Math.max(0, Math.min(1, (event.clientY - rect.top) / rect.height));
      const [dx, dy] = this.padDims();
      this.z[dx] = Number((fx * 2 * SLIDER_LIMIT - SLIDER_LIMIT).toFixed(3));
      if (dy !== dx) this.z[dy] = Number((SLIDER_LIMIT - fy * 2 * SLIDER_LIMIT).toFixed(3));
      this.setCode(this.z, { note: `pad: z${dx + 1}, z${dy + 1}` });
    };
    this.pad.addEventListener("pointerdown", (event) => {
      dragging = true;
      if (this.pad.setPointerCapture) this.pad.setPointerCapture(event.pointerId);
      event.preventDefault();
      move(event);
    });
    this.pad.addEventListener("pointermove", (event) => { if (dragging) move(event); });
    const stop = () => { dragging = false; };
    this.pad.addEventListener("pointerup", stop);
    this.pad.addEventListener("pointercancel", stop);
  }

  // ----- test images -----

  async loadStrip(offset) {
    try {
      const res = await request("GET", `${this.base}/test-images?offset=${offset}&count=${STRIP_COUNT}`);
      this.stripOffset = offset;
      this.strip.replaceChildren();
      const loads = [];
      for (const item of res.images) {
        const img = el("img", { dataset: { index: String(item.index) }, alt: `test image ${item.index}`,
          title: `#${item.index}${item.label === null || item.label === undefined ? "" : ` · label ${item.label}`}`,
        });
        img.addEventListener("click", (event) => this.stripClick(item.index, event));
        loads.push(showImage(img, item.image));
        this.strip.append(img);
      }
      const last = offset + res.images.length - 1;
      this.stripInfo.textContent = res.images.length ? `#${offset}–#${last} of ${res.total}` : `none of ${res.total}`;
      this.markStrip();
      await Promise.all(loads);
    } catch (err) {
      status.error(err);
    }
  }

  markStrip() {
    if (!this.strip) return;
    const a = this.interpA ? Number(this.interpA.value) : this.picked;
    const b = this.interpB ? Number(this.interpB.value) : -1;
    for (const img of this.strip.querySelectorAll("img")) {
      const i = Number(img.dataset.index);
      img.classList.toggle("picked", i === this.picked);
      img.classList.toggle("pick-a", this.interpA !== undefined && i === a);
      img.classList.toggle("pick-b", this.interpB !== undefined && i === b);
    }
  }

  stripClick(index, event) {
    if (event.shiftKey && this.interpB) {
      this.setSelect(this.interpB, index);
      this.pickedB = index;
      this.markStrip();
      return;
    }
    if (this.canEncode) this.encode(index);
    if (this.autoregressive) this.pick(index);
    if (this.encoder && !this.canEncode) this.pickForNeighbours(index);
    else if (this.encoder) this.picked = index;
    this.markStrip();
  }

  setSelect(select, index) {
    if (!select.querySelector(`option[value="${index}"]`)) {
      select.append(el("option", { value: index, text: `#${index}` }));
    }
    select.value = String(index);
  }

  async encode(index) {
    this.picked = index;
    if (this.interpA) this.setSelect(this.interpA, index);
    this.markStrip();
    try {
      // encoded under the image's own label (the server's default); the class buttons then show that label
      const res = await this.post("encode", { index, label: null });
      if (this.classButtons && res.label !== null && res.label !== undefined) this.markClass(res.label);
      this.setCode(res.z, { decode: false, note: `encoded test image #${index}` });
      await showImage(this.mainImage, res.reconstruction);
      status.ok();
    } catch (err) {
      status.error(err);
    }
  }

  // ----- interpolation -----

  async interpolate() {
    const steps = Math.round(Number(this.interpSteps.value));
    // each image encoded under its own label; the way decoded under the first one's
    const body = { a: Number(this.interpA.value), b: Number(this.interpB.value), steps,
      mode: this.interpMode.value, label: null };
    this.interpGo.disabled = true;
    try {
      const res = await this.post("interpolate", body);
      this.interpFrames.replaceChildren(...res.frames.map((src, k) =>
        el("img", { src, alt: `frame ${k}`, title: `frame ${k + 1} of ${res.frames.length}` })));
      this.animate(res.frames);
      status.ok();
    } catch (err) {
      status.error(err);
    } finally {
      this.interpGo.disabled = false;
    }
  }

  /** Cycle the animation image through the frames, forth and back. */
  animate(frames) {
    if (this.animTimer) clearInterval(this.animTimer);
    if (!frames.length) return;
    const order = frames.map((_, k) => k).concat(frames.map((_, k) => frames.length - 2 - k).slice(0, -1)
      .filter((k) => k > 0));
    let step = 0;
    this.interpAnim.src = frames[0];
    this.animTimer = setInterval(() => {
      step = (step + 1) % order.length;
      this.interpAnim.src = frames[order[step]];
    }, 120);
  }

  // ----- conditional -----

  async transferAll() {
    this.transferGo.disabled = true;
    try {
      const body = this.latent ? { z: this.z.slice() } : { index: this.picked };
      const res = await this.post("transfer", body);
      this.transferGrid.replaceChildren(...res.images.map((item) => el("figure", {},
        el("img", { src: item.image, alt: `class ${item.name}`, dataset: { label: String(item.label) } }),
        el("figcaption", { text: item.name }))));
      status.ok();
    } catch (err) {
      status.error(err);
    } finally {
      this.transferGo.disabled = false;
    }
  }

  // ----- encoders: nearest neighbours -----

  async pickForNeighbours(index) {
    this.picked = index;
    this.markStrip();
    if (!this.latent) {
      try {
        const res = await request("GET", `${this.base}/test-images?offset=${index}&count=1`);
        if (res.images.length) await showImage(this.neighboursQuery, res.images[0].image);
      } catch (err) {
        status.error(err);
      }
    }
  }

  async neighbours() {
    this.neighboursGo.disabled = true;
    try {
      const k = Math.max(1, Math.min(32, Math.round(Number(this.neighboursK.value) || 8)));
      const res = await this.post("neighbours", { index: this.picked, k });
      await showImage(this.neighboursQuery, res.query);
      this.neighboursList.replaceChildren(...res.neighbours.map((item) => el("img", {
        src: item.image, dataset: { index: String(item.index) }, alt: `training image ${item.index}`,
        title: `#${item.index}${item.label === null || item.label === undefined ? "" : ` · label ${item.label}`}`,
      })));
      status.ok();
    } catch (err) {
      status.error(err);
    } finally {
      this.neighboursGo.disabled = false;
    }
  }

  // ----- autoregressive: sample and complete, streamed -----

  async pick(index) {
    this.picked = index;
    this.markStrip();
    try {
      const res = await request("GET", `${this.base}/test-images?offset=${index}&count=1`);
      if (!res.images.length) return;
      const src = res.images[0].image;
      const img = new Image();
      await showImage(img, src);
      this.maskImage = img;
      this.resetMask();
      this.drawMask();
      await showImage(this.mainImage, src);
      this.root.querySelector(".main-note").textContent = `test image #${index}`;
    } catch (err) {
      status.error(err);
    }
  }

  shape() {
    const s = this.info.image_shape;
    if (s && s.length === 3) return { h: s[1], w: s[2] };
    const img = this.maskImage;
    return { h: img ? img.naturalHeight : 8, w: img ? img.naturalWidth : 8 };
  }

  resetMask() {
    const { h, w } = this.shape();
    this.mask = Array.from({ length: h }, () => new Array(w).fill(0));
  }

  maskDrawn() {
    return Boolean(this.mask) && this.mask.some((row) => row.some((v) => v));
  }

  /** The picked test image, with the hidden pixels shaded: the drawn mask, or else the bottom `hide` rows. */
  drawMask() {
    if (!this.maskCanvas || !this.mask) return;
    const { h, w } = this.shape();
    const canvas = this.maskCanvas;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (this.maskImage) ctx.drawImage(this.maskImage, 0, 0, canvas.width, canvas.height);
    const cw = canvas.width / w;
    const ch = canvas.height / h;
    const drawn = this.maskDrawn();
    if (drawn) {
      ctx.fillStyle = "rgba(220, 60, 60, 0.55)";
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) if (this.mask[y][x]) ctx.fillRect(x * cw, y * ch, cw, ch);
      }
      const hidden = this.mask.reduce((n, row) => n + row.reduce((m, v) => m + v, 0), 0);
      this.maskNote.textContent = `drawn mask: ${hidden} of ${h * w} pixels hidden (Complete uses it)`;
    } else {
      const hide = Math.max(0, Math.min(1, Number(this.arHide.value) || 0));
      const kept = h - Math.round(h * hide);
      ctx.fillStyle = "rgba(47, 111, 214, 0.45)";
      ctx.fillRect(0, kept * ch, canvas.width, (h - kept) * ch);
      this.maskNote.textContent = `no mask drawn: the bottom ${h - kept} of ${h} rows are hidden; drag to paint `
        + "a mask (shift-drag erases)";
    }
  }

  /** Drag paints hidden pixels (shift or right button erases); the stroke from the last point is filled in, so
   * a fast drag leaves no gaps between the pointer events. */
  bindMask() {
    let painting = null;
    let last = null;
    const dab = (x, y) => {
      const { h, w } = this.shape();
      const r = w > 16 ? 1 : 0;
      for (let yy = y - r; yy <= y + r; yy++) {
        for (let xx = x - r; xx <= x + r; xx++) {
          if (yy >= 0 && yy < h && xx >= 0 && xx < w) this.mask[yy][xx] = painting;
        }
      }
    };
    const paint = (event) => {
      if (!this.mask) return;
      const rect = this.maskCanvas.getBoundingClientRect();
      const { h, w } = this.shape();
      const x = Math.floor(((event.clientX - rect.left) / rect.width) * w);
      const y = Math.floor(((event.clientY - rect.top) / rect.height) * h);
      const from = last || { x, y };
      const steps = Math.max(Math.abs(x - from.x), Math.abs(y - from.y), 1);
      for (let k = 0; k <= steps; k++) {
        dab(Math.round(from.x + ((x - from.x) * k) / steps), Math.round(from.y + ((y - from.y) * k) / steps));
      }
      last = { x, y };
      this.drawMask();
    };
    this.maskCanvas.addEventListener("pointerdown", (event) => {
      painting = event.shiftKey || event.button === 2 ? 0 : 1;
      last = null;
      if (this.maskCanvas.setPointerCapture) this.maskCanvas.setPointerCapture(event.pointerId);
      event.preventDefault();
      paint(event);
    });
    this.maskCanvas.addEventListener("pointermove", (event) => { if (painting !== null) paint(event); });
    const stop = () => { painting = null; };
    this.maskCanvas.addEventListener("pointerup", stop);
    this.maskCanvas.addEventListener("pointercancel", stop);
    this.maskCanvas.addEventListener("contextmenu", (event) => event.preventDefault());
  }

  /** Sample or complete: read the NDJSON stream line by line, moving the progress bar, until the result. */
  async arRun(kind) {
    if (this.stream) this.stream.abort();
    const controller = new AbortController();
    this.stream = controller;
    const temperature = Number(this.arTemperature.value);
    const seed = randomSeed();
    let body;
    if (kind === "sample") {
      const n = Math.max(1, Math.min(16, Math.round(Number(this.arN.value) || 4)));
      body = { n, seed, temperature, label: this.label };
    } else {
      body = { index: this.picked, temperature, seed, label: this.label, hide: null, mask: null };
      if (this.maskDrawn()) body.mask = this.mask.map((row) => row.slice());
      else body.hide = Number(this.arHide.value);
    }
    this.arSample.disabled = true;
    this.arComplete.disabled = true;
    this.arCancel.disabled = false;
    this.arProgress.value = 0;
    this.arNote.textContent = kind === "sample" ? "sampling…" : "completing…";
    let result = null;
    try {
      const res = await fetch(`${this.base}/${kind}`, { method: "POST", signal: controller.signal,
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      if (!res.ok) {
        let message = `${res.status} ${res.statusText || "request failed"}`;
        try {
          const data = await res.json();
          if (data && data.error) message = data.error;
        } catch (err) {
          // keep the status line
        }
        throw new ApiError(message);
      }
      const type = res.headers.get("content-type") || "";
      if (!type.includes("ndjson")) {
        result = (await res.json()).images;
      } else {
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        const handle = (line) => {
          if (!line.trim()) return;
          const msg = JSON.parse(line);
          if (msg.type === "progress") {
            this.arProgress.max = Math.max(1, msg.total);
            this.arProgress.value = msg.done;
            this.arNote.textContent = `${msg.done} / ${msg.total}`;
          } else if (msg.type === "result") {
            result = msg.images;
          } else if (msg.type === "error") {
            throw new ApiError(msg.error);
          }
        };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, nl);
            buffer = buffer.slice(nl + 1);
            handle(line);
          }
        }
        handle(buffer + decoder.decode());
      }
      if (!result) throw new ApiError("the stream ended without a result");
      this.arProgress.value = this.arProgress.max;
      this.arResult.replaceChildren(...result.map((src, k) => el("img", { src, alt: `${kind} ${k}` })));
      await showImage(this.mainImage, result[0]);
      this.root.querySelector(".main-note").textContent = kind === "sample" ? "first sample"
        : `test image #${this.picked}, completed`;
      this.arNote.textContent = "done";
      status.ok();
    } catch (err) {
      if (err && err.name === "AbortError") {
        this.arNote.textContent = "cancelled";
      } else {
        this.arNote.textContent = "failed";
        status.error(err);
      }
    } finally {
      if (this.stream === controller) {
        this.stream = null;
        this.arSample.disabled = false;
        this.arComplete.disabled = false;
        this.arCancel.disabled = true;
      }
    }
  }

  // ----- text -----

  async sampleText(first = false) {
    this.textSample.disabled = true;
    try {
      const res = await this.post("text/sample", { n: 8, seed: randomSeed(),
        temperature: Number(this.textTemperature.value) });
      this.textLines.replaceChildren(...res.lines.map((line) => el("li", { text: line })));
      if (first) {
        const lines = res.lines.map((l) => l.trim()).filter((l) => l.length > 0 && l.length <= 64);
        if (!this.textFirst.value && lines.length > 1) {
          this.textFirst.value = lines[0];
          this.textLast.value = lines[1];
        }
      }
      status.ok();
    } catch (err) {
      status.error(err);
    } finally {
      this.textSample.disabled = false;
    }
  }

  async interpolateText() {
    const steps = Math.round(Number(this.textSteps.value));
    this.textInterpGo.disabled = true;
    try {
      const typed = { first: this.textFirst.value, last: this.textLast.value };
      const res = await this.post("text/interpolate", { ...typed, steps });
      const unknown = new Set([...(res.unknown?.first || []), ...(res.unknown?.last || [])]);
      this.textInterpLines.replaceChildren(...res.lines.map((line) => el("li", {}, markUnknown(line, unknown))));
      // the typed lines with their characters outside the vocabulary marked: the model reads those as unknown
      const notes = ["first", "last"].filter((end) => (res.unknown?.[end] || []).length).map((end) =>
        el("p", {}, `${end} line, ${res.unknown[end].length} character(s) not in the vocabulary: `,
          el("span", { class: "typed" }, markUnknown(typed[end], new Set(res.unknown[end])))));
      this.textUnknown.replaceChildren(...notes);
      status.ok();
    } catch (err) {
      status.error(err);
    } finally {
      this.textInterpGo.disabled = false;
    }
  }
}

/** A line as nodes, each character outside the vocabulary in its own <span class="unk">. */
function markUnknown(line, unknown) {
  const nodes = [];
  let plain = "";
  for (const ch of line) {
    if (unknown.has(ch)) {
      if (plain) nodes.push(plain);
      plain = "";
      nodes.push(el("span", { class: "unk", text: ch, title: "not in the vocabulary" }));
    } else {
      plain += ch;
    }
  }
  if (plain) nodes.push(plain);
  return nodes;
}

// --- the page ---

function wantedRuns(runs) {
  const params = new URLSearchParams(window.location.search);
  const ids = new Set(runs.map((r) => r.id));
  let wanted = [];
  if (params.get("runs")) wanted = params.get("runs").split(",").map((s) => s.trim()).filter(Boolean);
  else if (params.get("run")) wanted = [params.get("run").trim()];
  const unknown = wanted.filter((id) => !ids.has(id));
  if (unknown.length) throw new ApiError(`no run ${unknown.join(", ")}; runs are ${[...ids].join(", ")}`);
  if (!wanted.length && runs.length) wanted = [runs[0].id];
  return wanted;
}

function buildPickers(runs, shown) {
  const picker = document.getElementById("run-picker");
  const pickerB = document.getElementById("run-picker-b");
  for (const run of runs) {
    const text = `${run.id}: ${run.name} (${run.family})`;
    picker.append(el("option", { value: run.id, text }));
    pickerB.append(el("option", { value: run.id, text }));
  }
  picker.value = shown[0] ?? "";
  pickerB.value = shown.length > 1 ? shown[1] : "";
  const go = () => {
    const a = picker.value;
    const b = pickerB.value;
    window.location.search = b && b !== a ? `?runs=${a},${b}` : `?run=${a}`;
  };
  picker.addEventListener("change", go);
  pickerB.addEventListener("change", go);
}

async function main() {
  status.node = document.getElementById("status");
  try {
    const { runs } = await request("GET", "/api/runs");
    const shown = wantedRuns(runs);
    buildPickers(runs, shown);
    const container = document.getElementById("views");
    container.classList.toggle("side-by-side", shown.length > 1);
    const byId = new Map(runs.map((r) => [r.id, r]));
    for (const id of shown) {
      const view = new View(byId.get(id));
      hub.views.push(view);
      container.append(view.root);
    }
    if (hub.views.length > 1) {
      const dims = new Set(hub.views.filter((v) => v.latent).map((v) => v.latentDim));
      const wrap = document.querySelector(".link-wrap");
      wrap.hidden = !(dims.size === 1 && hub.views.filter((v) => v.latent).length > 1);
    }
    await Promise.all(hub.views.map((v) => v.start()));
    status.ready = true;
    if (!status.errored) status.set("ready", "ready");
  } catch (err) {
    status.error(err);
  }
}

document.addEventListener("DOMContentLoaded", main);
