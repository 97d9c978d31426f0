// The creation page: talks HTTP/JSON to the gateway's bridge (/v1/jobs, server-sent events) and
// reports what the visitor does through the _hmt tracker (hm.js).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "inkloop.apiKey";
  const openedAt = Date.now();
  let apiKey = "";
  let dwellSent = false;
  let current = null; // the image shown: {imageId, url, width, height, seed}
  let running = null; // {jobId, abort}
  const session = [];
  let template = null; // the suggested template the prompt was made from: {id, pattern}
  let assignments = {}; // experiment name -> this visitor's arm (GET /v1/web/experiments)
  // Same-intent regenerations since the last accepted image (downloaded or edited), for the hint.
  let regenerations = 0;
  let lastPrompt = null;

  // _trackEvent(category, action, label, value) plus the request id the gateway gets.
  const track = (category, action, label, value, requestId) =>
    window._hmt.push(["_trackEvent", category, action, label, value, requestId]);

  function uuid() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super(body.message || `HTTP ${status}`);
      Object.assign(this, { status, code: body.code || "UNKNOWN", field: body.field || "", policy: body.policy || "" });
      this.retryAfter = body.retry_after_s;
    }
  }

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const data = text ? JSON.parse(text) : {};
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ---- errors: shown in words, and tracked
  function describe(error) {
    switch (error.code) {
      case "RESOURCE_EXHAUSTED":
        return `请求过于频繁 Rate limited: retry in ${Math.ceil(error.retryAfter || 1)} s. (${error.message})`;
      case "FAILED_PRECONDITION":
        return error.policy
          ? `内容策略拒绝 Rejected by policy "${error.policy}". Please change the prompt.`
          : `无法执行 Not possible now: ${error.message}`;
      case "INVALID_ARGUMENT":
        return `参数无效 Invalid ${error.field || "request"}: ${error.message}`;
      case "UNAUTHENTICATED":
        return "密钥无效 The API key was refused: enter a valid key.";
      case "PERMISSION_DENIED":
        return `无权限 Not allowed: ${error.message}`;
      default:
        return `出错了 Something went wrong (${error.code}): ${error.message}`;
    }
  }

  function showError(error) {
    $("status").hidden = true; // the error says what happened; no stale "Submitting…" beside it
    const box = $("error");
    box.textContent = describe(error);
    box.dataset.code = error.code;
    box.hidden = false;
    const retry = error.retryAfter === undefined ? undefined : Math.ceil(error.retryAfter);
    track("error", error.code || "UNKNOWN", error.policy || error.field || "", retry);
    if (error.code === "UNAUTHENTICATED") askForKey();
  }

  const clearError = () => {
    $("error").hidden = true;
    $("error").textContent = "";
  };

  // ---- exposure of every entry, once per page view, when it is first on screen
  const exposed = new Set();
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const name = entry.target.dataset.entry;
      if (entry.isIntersecting && !exposed.has(name)) {
        exposed.add(name);
        track(name, "exposure");
      }
    }
  });
  document.querySelectorAll("[data-entry]").forEach((element) => observer.observe(element));

  // ---- the API key: injected by the server (user-role key only), or asked once and kept locally
  function askForKey() {
    $("key-panel").hidden = false;
    $("generate").disabled = true;
  }

  $("save-key").addEventListener("click", () => {
    const value = $("api-key").value.trim();
    if (!value) return;
    apiKey = value;
    localStorage.setItem(KEY, value);
    $("key-panel").hidden = true;
    $("forget-key").hidden = false;
    $("generate").disabled = false;
    clearError();
  });

  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY);
    apiKey = "";
    askForKey();
  });

  // ---- the served model's choices: its sizes, steps and CFG (a tiny dev model answers in seconds)
  function offerModel(model) {
    if (!model) return; // inference is not up yet: zeros ask for the model's own defaults
    const select = $("size");
    select.replaceChildren(
      ...model.sizes.map(({ width, height, aspectRatio }) => new Option(`${aspectRatio} · ${width}×${height}`, `${width}x${height}`)),
    );
    $("steps").value = model.steps;
    $("steps").min = model.minSteps;
    $("steps").max = model.maxSteps;
    $("cfg").value = model.trueCfgScale;
    $("edit").hidden = !model.edits; // only when inference serves an edit model
  }

  async function loadConfig() {
    let config = {};
    try {
      config = await (await fetch("/v1/web/config")).json();
    } catch {
      config = {};
    }
    offerModel(config.model);
    apiKey = config.api_key || localStorage.getItem(KEY) || "";
    if (apiKey) $("forget-key").hidden = false;
    else askForKey();
  }

  // ---- nudges: template suggestions beside the prompt, experiment arms
  const HAN = /[\u3400-\u9fff\uf900-\ufaff]/;
  const LATIN = /[A-Za-z]/;
  function languageOf(text) {
    const han = HAN.test(text);
    const latin = LATIN.test(text);
    if (han && latin) return "mixed";
    if (han || (!latin && navigator.language.startsWith("zh"))) return "zh";
    return "en";
  }

  const shownTemplates = new Set();
  let suggestedFor = null;
  async function suggest() {
    const language = languageOf($("prompt").value);
    if (language === suggestedFor) return;
    suggestedFor = language;
    let templates = [];
    try {
      ({ templates } = await (await fetch(`/v1/web/templates?language=${language}`)).json());
    } catch {
      templates = [];
    }
    const box = $("suggestions");
    box.querySelectorAll("button").forEach((button) => button.remove());
    for (const item of templates || []) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = item.name;
      button.title = item.pattern;
      button.dataset.templateId = item.id;
      button.className = template && template.id === item.id ? "chosen" : "";
      button.addEventListener("click", () => pickTemplate(item));
      box.append(button);
      if (!shownTemplates.has(item.id)) {
        shownTemplates.add(item.id);
        track("template", "exposure", item.id);
      }
    }
    box.hidden = !(templates && templates.length);
  }

  function pickTemplate(item) {
    template = { id: item.id, pattern: item.pattern };
    $("prompt").value = item.pattern;
    $("prompt").focus();
    track("template", "pick", item.id);
    $("suggestions").querySelectorAll("button").forEach((b) => (b.className = b.dataset.templateId === item.id ? "chosen" : ""));
  }

  let suggestTimer = 0;
  $("prompt").addEventListener("input", () => {
    if (!$("prompt").value.trim()) template = null; // cleared: no longer made from the template
    clearTimeout(suggestTimer);
    suggestTimer = setTimeout(suggest, 400);
  });

  async function loadAssignments() {
    try {
      ({ assignments } = await (await fetch("/v1/web/experiments")).json());
    } catch {
      assignments = {};
    }
  }

  // Same intent, as the page can tell it: character-trigram overlap of the normalised prompts.
  function trigrams(text) {
    const s = text.toLowerCase().replace(/[\s\p{P}]+/gu, "");
    const grams = new Set();
    for (let i = 0; i + 3 <= s.length; i++) grams.add(s.slice(i, i + 3));
    if (!grams.size && s) grams.add(s);
    return grams;
  }
  function sameIntent(a, b) {
    const x = trigrams(a);
    const y = trigrams(b);
    const shared = [...x].filter((g) => y.has(g)).length;
    return shared / Math.max(1, x.size + y.size - shared) >= 0.5;
  }

  function noteGeneration(prompt) {
    regenerations = lastPrompt !== null && sameIntent(prompt, lastPrompt) ? regenerations + 1 : 0;
    lastPrompt = prompt;
  }
  function noteAccepted() {
    regenerations = 0;
    lastPrompt = null;
    $("inpaint-hint").hidden = true;
  }

  // inpaint_hint: after two regenerations of one intent; every arm reports the exposure, only "hint"
  // shows the hint.
  let hintExposed = false;
  function maybeHint() {
    const arm = assignments.inpaint_hint;
    if (regenerations < 2 || !arm) return;
    if (!hintExposed) {
      hintExposed = true;
      track("experiment", "exposure", `inpaint_hint:${arm}`);
    }
    $("inpaint-hint").hidden = arm !== "hint";
  }
  $("try-inpaint").addEventListener("click", () => {
    track("experiment", "click", "inpaint_hint:hint");
    $("inpaint").click();
  });

  // ---- the form
  function parameters() {
    const [width, height] = $("size").value.split("x").map(Number);
    // Zero width, height and steps, and no CFG, mean the model's defaults.
    const params = { prompt: $("prompt").value, negativePrompt: $("negative").value, width, height };
    params.steps = Number($("steps").value) || 0;
    if ($("cfg").value !== "") params.trueCfgScale = Number($("cfg").value);
    if ($("seed").value !== "") params.seed = $("seed").value;
    // Live previews about five times per image (the model's steps when the field is left empty).
    if ($("live-preview").checked) params.previewEverySteps = Math.max(1, Math.round((params.steps || 5) / 5));
    return params;
  }

  // `prompt`: what the request asks for (an edit's is its instruction).
  async function submit(entry, task, prompt = $("prompt").value) {
    clearError();
    const requestId = uuid();
    if (entry === "generate") noteGeneration(prompt);
    else noteAccepted(); // repainting or extending an image is keeping it
    // Every submission is a generate click with the request id the gateway gets (inpaint, outpaint
    // and edit say so in a custom var); the label is hashed by the tracker (it has a space), the
    // value is the prompt length in characters.
    window._hmt.push(["_setCustomVar", 2, "kind", entry, 3]);
    track("generate", "click", `prompt ${prompt.slice(0, 200)}`, [...prompt].length, requestId);
    if (!dwellSent) {
      dwellSent = true;
      track("page", "dwell", "before_generate", Math.round((Date.now() - openedAt) / 1000));
    }
    setBusy(true);
    try {
      const request = { requestId, task: await task() };
      if (template && entry === "generate") request.templateId = template.id;
      const { job } = await api("POST", "/v1/jobs", request);
      await follow(job.jobId, entry);
    } catch (error) {
      showError(error instanceof ApiError ? error : new ApiError(0, { code: "NETWORK", message: String(error) }));
    } finally {
      setBusy(false);
    }
  }

  function setBusy(busy) {
    for (const id of ["generate", "run-inpaint", "run-outpaint", "run-edit"]) $(id).disabled = busy || !apiKey;
    $("cancel").hidden = !busy;
    if (!busy) return; // the status line keeps what the job said last (or stays hidden after an error)
    $("status").hidden = false;
    status("提交中 Submitting…", 0, 1);
  }

  function status(text, value, max) {
    $("status-text").textContent = text;
    const bar = $("progress");
    if (value === null) bar.removeAttribute("value");
    else {
      bar.max = max;
      bar.value = value;
    }
  }

  // Server-sent events through fetch, so the key travels in a header (EventSource cannot send one).
  async function follow(jobId, entry) {
    const abort = new AbortController();
    running = { jobId, abort };
    const response = await fetch(`/v1/jobs/${jobId}/events`, {
      headers: { Authorization: `Bearer ${apiKey}` },
      signal: abort.signal,
    });
    if (!response.ok) throw new ApiError(response.status, await response.json());
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (data) onEvent(JSON.parse(data), entry);
        }
      }
    } finally {
      running = null;
    }
  }

  function onEvent(event, entry) {
    if (event.queued) status(`排队中 Queued · position ${event.queued.position || 0}`, null);
    else if (event.running) {
      const { step = 0, totalSteps = 1, preview } = event.running;
      status(`生成中 Step ${step}/${totalSteps}`, step, totalSteps);
      if (preview) showPreview(preview);
    } else if (event.succeeded) {
      const [image] = event.succeeded.images;
      status("完成 Done", 1, 1);
      show({ ...image, url: image.downloadUrl, kind: entry }, true);
      if (entry === "generate") maybeHint();
    } else if (event.failed) {
      status("失败 Failed", 0, 1);
      showError(new ApiError(0, event.failed));
    } else if (event.cancelled) status("已取消 Cancelled", 0, 1);
  }

  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    submit("generate", async () => ({ textToImage: { parameters: parameters() } }));
  });

  $("cancel").addEventListener("click", async () => {
    if (!running) return;
    track("cancel", "click");
    try {
      await api("POST", `/v1/jobs/${running.jobId}:cancel`);
    } catch (error) {
      showError(error);
    }
  });

  // ---- the result, downloads, history
  function downloadHref() {
    const ext = $("format").value;
    return `${current.url.replace(/\.png\?/, `.${ext}?`)}&download=1`;
  }

  // A live preview (a small JPEG of the image so far) stands in the result's place until it is done.
  function showPreview(base64) {
    $("result").hidden = false;
    $("image").src = `data:image/jpeg;base64,${base64}`;
    $("image").dataset.preview = "1";
  }

  function show(image, fresh) {
    delete $("image").dataset.preview;
    current = image;
    $("result").hidden = false;
    $("image").src = image.url;
    $("image").dataset.imageId = image.imageId;
    $("download").href = downloadHref();
    closePanels();
    if (fresh) {
      session.unshift(image);
      renderHistory();
    }
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren(
      ...session.map((image) => {
        const item = document.createElement("li");
        item.className = image === current ? "current" : "";
        const thumb = document.createElement("img");
        thumb.src = image.url;
        thumb.alt = image.kind;
        item.append(thumb, `${image.kind} · ${image.width}×${image.height}`);
        item.addEventListener("click", () => {
          show(image, false);
          renderHistory();
        });
        return item;
      }),
    );
  }

  $("format").addEventListener("change", () => {
    if (current) $("download").href = downloadHref();
  });
  $("download").addEventListener("click", () => {
    track("download", "click", $("format").value);
    noteAccepted();
  });

  // ---- inpaint: paint a mask with a brush, then repaint the white part
  const mask = $("mask");
  const pen = mask.getContext("2d");
  let painting = false;

  function closePanels() {
    $("inpaint-panel").hidden = true;
    $("outpaint-panel").hidden = true;
    $("edit-panel").hidden = true;
    mask.hidden = true;
  }

  $("inpaint").addEventListener("click", () => {
    track("inpaint", "click", "open");
    const opening = $("inpaint-panel").hidden;
    closePanels();
    if (!opening) return;
    mask.width = $("image").naturalWidth;
    mask.height = $("image").naturalHeight;
    pen.clearRect(0, 0, mask.width, mask.height);
    mask.hidden = false;
    $("inpaint-panel").hidden = false;
  });

  function paintAt(event) {
    const box = mask.getBoundingClientRect();
    const scale = mask.width / box.width;
    pen.fillStyle = "#ff2a2a";
    pen.beginPath();
    const radius = (Number($("brush").value) * scale) / 2;
    pen.arc((event.clientX - box.left) * scale, (event.clientY - box.top) * scale, radius, 0, Math.PI * 2);
    pen.fill();
  }

  mask.addEventListener("pointerdown", (e) => {
    painting = true;
    mask.setPointerCapture?.(e.pointerId);
    paintAt(e);
  });
  mask.addEventListener("pointermove", (e) => painting && paintAt(e));
  for (const name of ["pointerup", "pointerleave", "pointercancel"]) mask.addEventListener(name, () => (painting = false));
  $("clear-mask").addEventListener("click", () => pen.clearRect(0, 0, mask.width, mask.height));

  // The painted strokes as a black/white PNG (white = repaint), base64.
  function maskPng() {
    const out = document.createElement("canvas");
    out.width = mask.width;
    out.height = mask.height;
    const ctx = out.getContext("2d");
    const pixels = pen.getImageData(0, 0, mask.width, mask.height);
    for (let i = 0; i < pixels.data.length; i += 4) {
      const on = pixels.data[i + 3] > 0 ? 255 : 0;
      pixels.data.set([on, on, on, 255], i);
    }
    ctx.putImageData(pixels, 0, 0);
    return out.toDataURL("image/png").split(",")[1];
  }

  async function currentImageBase64() {
    const blob = await (await fetch(current.url)).blob();
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",")[1]);
      reader.onerror = reject;
      reader.readAsDataURL(blob);
    });
  }

  function editParameters() {
    const { width, height, ...rest } = parameters(); // the size comes from the image
    return rest;
  }

  $("run-inpaint").addEventListener("click", () =>
    submit("inpaint", async () => ({
      inpaint: { parameters: editParameters(), image: await currentImageBase64(), mask: maskPng() },
    })),
  );

  // ---- outpaint: extend chosen sides by some pixels
  $("outpaint").addEventListener("click", () => {
    track("outpaint", "click", "open");
    const opening = $("outpaint-panel").hidden;
    closePanels();
    $("outpaint-panel").hidden = !opening;
  });

  $("run-outpaint").addEventListener("click", () => {
    const pixels = Number($("pixels").value);
    const extension = {};
    for (const side of ["left", "top", "right", "bottom"]) if ($(`side-${side}`).checked) extension[side] = pixels;
    submit("outpaint", async () => ({
      outpaint: { parameters: editParameters(), image: await currentImageBase64(), extension },
    }));
  });

  // ---- edit: change the whole image as an instruction says (the edit model), no mask
  $("edit").addEventListener("click", () => {
    track("edit", "click", "open");
    const opening = $("edit-panel").hidden;
    closePanels();
    $("edit-panel").hidden = !opening;
    if (opening) $("instruction").focus();
  });

  $("run-edit").addEventListener("click", () => {
    const instruction = $("instruction").value.trim();
    if (!instruction) {
      $("instruction").focus();
      return;
    }
    submit(
      "edit",
      async () => ({
        edit: { parameters: { ...editParameters(), prompt: instruction }, image: await currentImageBase64() },
      }),
      instruction,
    );
  });

  loadConfig();
  loadAssignments();
  suggest();
})();
