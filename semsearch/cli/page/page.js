// semsearch's search page: a query box, filters, hits with their place, context and emphasized
// sentence, and "similar" on each hit. It calls the server's own JSON API (/search, /similar) and
// keeps what it shows in the address (back and forward work, a search can be linked to).
"use strict";

const $ = (id) => document.getElementById(id);
let facts = { project: null, token: false };
let current = -1;

function element(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "className") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function list(value) {
  return value.split(",").map((s) => s.trim()).filter(Boolean);
}

// The form as the API's arguments (and as the page's address).
function formParams() {
  const params = new URLSearchParams();
  params.set("query", $("q").value.trim());
  for (const p of list($("paths").value)) params.append("paths", p);
  for (const t of list($("types").value.replace(/\s+/g, ","))) params.append("types", t);
  if ($("changed").value) params.set("changed_within", $("changed").value);
  if ($("before").value) params.set("changed_before", $("before").value);
  if ($("mode").value !== "hybrid") params.set("mode", $("mode").value);
  if ($("k").value && $("k").value !== "10") params.set("k", $("k").value);
  if ($("files").checked) params.set("files_only", "true");
  if ($("rerank").checked) params.set("rerank", "true");
  return params;
}

function fillForm(params) {
  $("q").value = params.get("query") || "";
  $("paths").value = params.getAll("paths").join(", ");
  $("types").value = params.getAll("types").join(", ");
  $("changed").value = params.get("changed_within") || "";
  $("before").value = params.get("changed_before") || "";
  $("mode").value = params.get("mode") || "hybrid";
  $("k").value = params.get("k") || "10";
  $("files").checked = params.get("files_only") === "true";
  $("rerank").checked = params.get("rerank") === "true";
  const filtered = ["paths", "types", "changed_within", "changed_before", "mode", "k", "files_only", "rerank"];
  if (filtered.some((key) => params.has(key))) $("filters").open = true;
}

async function call(route, params) {
  const response = await fetch(`/${route}?${params}`, { headers: { Accept: "application/json" } });
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("log in first");
  }
  const data = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
  return data;
}

function where(hit) {
  const loc = hit.location || {};
  const kind = loc.kind || "line";
  const number = loc[kind];
  if (number === undefined || number === null) return hit.path;
  return kind === "line" ? `${hit.path}:${number}` : `${hit.path} (${kind} ${number})`;
}

function fileLink(hit) {
  const label = where(hit);
  if (!facts.project) return element("code", {}, label);
  const line = hit.location && hit.location.kind === "line" ? `:${hit.location.line}` : "";
  const full = `${facts.project.replace(/\/$/, "")}/${hit.path}`;
  return element("a", { href: `vscode://file${encodeURI(full.startsWith("/") ? full : "/" + full)}${line}`,
    title: "Open in VS Code (this machine)" }, label);
}

// Blank lines shown as one line break: a passage keeps its shape in less room.
const tight = (text) => text.replace(/\n\s*\n+/g, "\n");

function textWithMark(hit) {
  const text = hit.text || "";
  const box = element("div", { className: "text" });
  const span = hit.highlight;
  if (!span || span.length !== 2) {
    box.append(tight(text));
    return box;
  }
  box.append(tight(text.slice(0, span[0])), element("mark", {}, tight(text.slice(span[0], span[1]))),
    tight(text.slice(span[1])));
  return box;
}

function renderHit(hit, index) {
  const score = element("span", { className: "score", title: JSON.stringify(hit.scores) }, hit.score.toFixed(3));
  const similar = element("button", { type: "button", "data-action": "similar" }, "similar");
  const copy = element("button", { type: "button", "data-action": "copy" }, "copy");
  const item = element("li", { className: "hit", tabindex: "0", "data-index": String(index) },
    element("div", { className: "where" }, fileLink(hit), score),
    hit.context ? element("div", { className: "context" }, hit.context.replace(/\n/g, " › ")) : null,
    textWithMark(hit),
    element("div", { className: "actions" }, similar, copy));
  similar.addEventListener("click", () => showSimilar(hit));
  copy.addEventListener("click", () => copyPlace(hit, copy));
  item.hit = hit;
  return item;
}

function show(title, hits) {
  const box = $("hits");
  box.replaceChildren(...hits.map(renderHit));
  $("status").textContent = title;
  current = -1;
}

async function runSearch(push) {
  const params = formParams();
  if (!params.get("query")) return;
  if (push) history.pushState(null, "", `/?${params}`);
  $("status").textContent = "Searching…";
  try {
    const data = await call("search", params);
    const n = data.hits.length;
    show(n ? `${n} hit${n === 1 ? "" : "s"} for “${data.query}”` : `Nothing found for “${data.query}”`, data.hits);
  } catch (error) {
    show(error.message, []);
  }
}

async function showSimilar(hit, push = true) {
  const params = new URLSearchParams({ path: hit.path });
  if (hit.location && hit.location.kind === "line") params.set("line", hit.location.line);
  else if (hit.location && hit.location[hit.location.kind]) params.set("line", hit.location[hit.location.kind]);
  params.set("k", $("k").value || "10");
  if (push) history.pushState(null, "", `/?similar=${encodeURIComponent(params)}`);
  $("status").textContent = "Looking for similar passages…";
  try {
    const data = await call("similar", params);
    show(`Passages like ${data.target}`, data.hits);
  } catch (error) {
    show(error.message, []);
  }
}

async function copyPlace(hit, button) {
  const text = hit.location && hit.location.kind === "line" ? `${hit.path}:${hit.location.line}` : hit.path;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "copied";
  } catch {
    window.prompt("Copy:", text);
  }
}

function fromAddress() {
  const params = new URLSearchParams(window.location.search);
  if (params.has("similar")) {
    const inner = new URLSearchParams(params.get("similar"));
    const line = Number(inner.get("line"));
    showSimilar({ path: inner.get("path"), location: line ? { kind: "line", line } : {} }, false);
    return;
  }
  fillForm(params);
  if (params.get("query")) runSearch(false);
}

function move(step) {
  const items = [...document.querySelectorAll(".hit")];
  if (!items.length) return;
  current = Math.max(0, Math.min(items.length - 1, current + step));
  items[current].focus();
}

document.addEventListener("keydown", (event) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (event.key === "/" && !typing) {
    event.preventDefault();
    $("q").focus();
    $("q").select();
    return;
  }
  if (event.key === "Escape") {
    $("q").focus();
    return;
  }
  if (typing) return;
  const focused = document.activeElement.closest && document.activeElement.closest(".hit");
  if (focused) current = Number(focused.dataset.index);
  if (event.key === "j" || event.key === "ArrowDown") { event.preventDefault(); move(1); }
  else if (event.key === "k" || event.key === "ArrowUp") { event.preventDefault(); move(-1); }
  else if (focused && event.key === "s") showSimilar(focused.hit);
  else if (focused && event.key === "c") copyPlace(focused.hit, focused.querySelector("[data-action=copy]"));
  else if (focused && event.key === "Enter" && event.target === focused) {
    const link = focused.querySelector(".where a");
    if (link) link.click();
  }
});

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  runSearch(true);
});
window.addEventListener("popstate", fromAddress);

fetch("/page.json").then((r) => (r.ok ? r.json() : facts)).then((data) => {
  facts = data;
  $("logout").hidden = !facts.token;
}).catch(() => {}).finally(fromAddress);
