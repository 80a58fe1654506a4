// The playground: rank captions against images through the bridge's own JSON API.
// No framework, no build step; every value from the user or the server goes in via textContent.
"use strict";

const API_KEY_STORAGE = "clip-grpc-api-key"; // sessionStorage: this tab only

const $ = (id) => document.getElementById(id);
const state = { files: [] };

// ---- talking to the bridge ------------------------------------------------------------

class ApiError extends Error {}

function apiKey() {
  return sessionStorage.getItem(API_KEY_STORAGE) || "";
}

async function api(path, body) {
  const headers = {};
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(`Cannot reach the bridge at ${location.origin}: is it running?`);
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch (error) {
    payload = null;
  }
  if (response.status === 401) {
    $("api-key-section").hidden = false;
    $("api-key").focus();
    throw new ApiError(apiKey() ? "The API key was refused; enter another one."
      : "This bridge needs an API key: enter it above.");
  }
  if (!response.ok) {
    const error = payload && payload.error;
    const message = error && error.message ? error.message : `HTTP ${response.status}`;
    throw new ApiError(`${response.status} ${error && error.code ? error.code : ""}: ${message}`);
  }
  return payload;
}

function showError(message, source = "") {
  const box = $("error");
  box.textContent = message;
  box.dataset.source = source;
  box.hidden = !message;
}

const INFO_RETRY_MS = 3000;
let infoRetry = null;

// The model line; while the server is down or still loading, it keeps asking.
async function loadInfo() {
  clearTimeout(infoRetry);
  try {
    const info = await api("/v1/info");
    $("model").textContent = `Model ${info.modelName} (${info.modelFamily}, ` +
      `${info.embeddingDim}-d, ${info.device} ${info.dtype})`;
    $("model").dataset.dim = info.embeddingDim;
    if ($("error").dataset.source === "info") showError("");
  } catch (error) {
    $("model").textContent = "The model server is not answering; trying again...";
    showError(error.message, "info");
    infoRetry = setTimeout(loadInfo, INFO_RETRY_MS);
  }
}

// ---- choosing images ----------------------------------------------------------------

function addFiles(fileList) {
  for (const file of fileList) state.files.push(file);
  renderThumbnails();
}

function renderThumbnails() {
  const list = $("thumbnails");
  list.replaceChildren();
  state.files.forEach((file, index) => {
    const item = document.createElement("li");
    const image = document.createElement("img");
    image.src = URL.createObjectURL(file);
    image.alt = file.name;
    image.onload = () => URL.revokeObjectURL(image.src);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.title = `remove ${file.name}`;
    remove.onclick = () => {
      state.files.splice(index, 1);
      renderThumbnails();
    };
    const name = document.createElement("span");
    name.textContent = file.name;
    item.append(image, name, remove);
    list.append(item);
  });
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(new ApiError(`${file.name}: the browser could not read it`));
    reader.readAsDataURL(file);
  });
}

// ---- ranking ------------------------------------------------------------------------

function captionLines() {
  return $("captions").value.split("\n").map((line) => line.trim()).filter(Boolean);
}

async function rankOne(file, captions) {
  const started = performance.now();
  const answer = await api("/v1/rank", {
    query: { id: file.name, image: await base64Of(file) },
    candidates: captions.map((text, index) => ({ id: String(index), text })),
  });
  return { answer, milliseconds: performance.now() - started };
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderCard(file, captions, outcome) {
  const card = element("article", "card");
  card.dataset.image = file.name;
  const head = element("header");
  const thumbnail = element("img");
  thumbnail.src = URL.createObjectURL(file);
  thumbnail.alt = file.name;
  head.append(thumbnail, element("h2", "", file.name));
  card.append(head);

  if (outcome.status === "rejected") {
    card.classList.add("failed");
    card.append(element("p", "error", outcome.reason.message));
    return card;
  }
  const { answer, milliseconds } = outcome.value;
  head.append(element("span", "muted timing", `${milliseconds.toFixed(0)} ms`));
  const rows = element("ol", "ranking");
  for (const candidate of answer.candidates) {
    const row = element("li", "candidate");
    row.dataset.caption = captions[candidate.index];
    row.append(element("span", "caption", captions[candidate.index]));
    const bar = element("span", "bar");
    const fill = element("span", "fill");
    fill.style.width = `${Math.max(0, Math.min(100, candidate.score))}%`;
    bar.append(fill);
    row.append(
      bar,
      element("span", "score", String(candidate.score)),
      element("span", "cosine", candidate.cosine.toFixed(3)),
      element("span", "probability", `${(100 * candidate.probability).toFixed(1)}%`),
    );
    rows.append(row);
  }
  const legend = element("p", "legend muted", "score 0-100 · cosine · probability");
  card.append(rows, legend);
  return card;
}

async function compare(event) {
  event.preventDefault();
  showError("");
  const captions = captionLines();
  if (!state.files.length) return showError("Add at least one image.");
  if (!captions.length) return showError("Write at least one caption.");
  $("compare").disabled = true;
  $("timing").textContent = "ranking...";
  const started = performance.now();
  try {
    const outcomes = await Promise.allSettled(
      state.files.map((file) => rankOne(file, captions)),
    );
    $("results").replaceChildren(
      ...state.files.map((file, index) => renderCard(file, captions, outcomes[index])),
    );
    const failures = outcomes.filter((outcome) => outcome.status === "rejected");
    if (failures.length) {
      showError(`${failures.length} of ${outcomes.length} images failed: ` +
        failures[0].reason.message);
    }
    $("timing").textContent = `${outcomes.length} request(s) in ` +
      `${(performance.now() - started).toFixed(0)} ms`;
  } finally {
    $("compare").disabled = false;
  }
}

// ---- wiring -------------------------------------------------------------------------

function setUp() {
  $("images").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = "";
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    addFiles(event.dataTransfer.files);
  });
  $("api-key").value = apiKey();
  if (apiKey()) $("api-key-section").hidden = false;
  $("api-key").addEventListener("change", (event) => {
    sessionStorage.setItem(API_KEY_STORAGE, event.target.value.trim());
    loadInfo();
  });
  $("api-key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(API_KEY_STORAGE);
    $("api-key").value = "";
  });
  $("compare-form").addEventListener("submit", compare);
  loadInfo();
}

document.addEventListener("DOMContentLoaded", setUp);
