(() => {
  "use strict";
  const data = JSON.parse(document.getElementById("data").textContent);
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const stage = document.getElementById("stage");
  const labels = document.getElementById("labels");
  const tip = document.getElementById("tip");
  const toast = document.getElementById("toast");
  const legend = document.getElementById("legend");
  const filter = document.getElementById("filter");
  const n = data.x.length;
  const OUTLIER = "#9aa0a6";
  const radius = n > 10000 ? 2 : n > 2000 ? 2.6 : 3.5;
  const view = { zoom: 1, cx: 0.5, cy: 0.5 };
  let width = 0, height = 0, base = 1, grid = new Map(), hovered = -1, alone = null, matching = null;

  const colour = (t) => (t < 0 ? OUTLIER : data.topics[t].color);
  const visible = (t) => (alone === null || t === alone) && (matching === null || matching.has(t));
  const sx = (x) => (x - view.cx) * view.zoom * base + width / 2;
  const sy = (y) => (y - view.cy) * view.zoom * base + height / 2;

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    width = stage.clientWidth; height = stage.clientHeight;
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    base = Math.max(1, (Math.min(width, height) - 40) / 1.1);  // the layout spans -0.05..1.05
    draw();
  }

  function draw() {
    ctx.clearRect(0, 0, width, height);
    grid = new Map();
    let drawn = 0;
    for (const pass of [0, 1]) {  // faded and outliers first, the shown topics on top
      for (let i = 0; i < n; i++) {
        const t = data.t[i], on = visible(t) && t >= 0;
        if ((pass === 1) !== on) continue;
        const x = sx(data.x[i]), y = sy(data.y[i]);
        if (x < -5 || y < -5 || x > width + 5 || y > height + 5) continue;
        ctx.globalAlpha = on ? 0.85 : t < 0 && alone === null && matching === null ? 0.45 : 0.08;
        ctx.fillStyle = colour(t);
        ctx.beginPath(); ctx.arc(x, y, radius, 0, 2 * Math.PI); ctx.fill();
        drawn++;
        if (on || (t < 0 && alone === null && matching === null)) {
          const key = `${Math.floor(x / 8)},${Math.floor(y / 8)}`;
          if (!grid.has(key)) grid.set(key, []);
          grid.get(key).push(i);
        }
      }
    }
    ctx.globalAlpha = 1;
    if (hovered >= 0) {
      ctx.strokeStyle = getComputedStyle(document.body).color; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(sx(data.x[hovered]), sy(data.y[hovered]), radius + 3, 0, 2 * Math.PI); ctx.stroke();
    }
    canvas.dataset.drawn = String(drawn);
    place();
  }

  function place() {  // largest topics first; a name that would cover one already placed waits for a zoom
    labels.replaceChildren();
    const boxes = [];
    data.topics.forEach((topic, t) => {
      if (!visible(t)) return;
      const div = document.createElement("div");
      div.className = "label";
      div.textContent = topic.name;
      div.style.left = `${sx(topic.x)}px`; div.style.top = `${sy(topic.y)}px`;
      div.style.color = topic.color;
      labels.append(div);
      const box = div.getBoundingClientRect();
      if (boxes.some((b) => box.left < b.right && box.right > b.left && box.top < b.bottom && box.bottom > b.top)) {
        div.classList.add("covered");
      } else boxes.push(box);
    });
  }

  function nearest(px, py) {
    let best = -1, bestD = 64;  // within 8 px
    const gx = Math.floor(px / 8), gy = Math.floor(py / 8);
    for (let a = gx - 1; a <= gx + 1; a++) for (let b = gy - 1; b <= gy + 1; b++) {
      for (const i of grid.get(`${a},${b}`) || []) {
        const d = (sx(data.x[i]) - px) ** 2 + (sy(data.y[i]) - py) ** 2;
        if (d < bestD) { bestD = d; best = i; }
      }
    }
    return best;
  }

  function show(i, px, py) {
    if (i < 0) { tip.hidden = true; return; }
    const t = data.t[i];
    tip.replaceChildren();
    const where = document.createElement("div"); where.className = "where"; where.textContent = data.w[i];
    const topic = document.createElement("div"); topic.className = "topic";
    topic.textContent = t < 0 ? "in no topic" : `topic ${t + 1}: ${data.topics[t].name}`;
    const snip = document.createElement("div"); snip.className = "snip"; snip.textContent = data.s[i];
    tip.append(where, topic, snip);
    tip.hidden = false;
    const left = Math.min(px + 14, width - tip.offsetWidth - 8), top = Math.min(py + 14, height - tip.offsetHeight - 8);
    tip.style.left = `${Math.max(4, left)}px`; tip.style.top = `${Math.max(4, top)}px`;
  }

  function copy(text) {
    const done = () => { toast.textContent = `Copied ${text}`; toast.classList.add("show");
      setTimeout(() => toast.classList.remove("show"), 1600); };
    const fallback = () => {
      const area = document.createElement("textarea"); area.value = text; document.body.append(area); area.select();
      try { document.execCommand("copy"); } finally { area.remove(); } done();
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
    else fallback();
  }

  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, y: e.offsetY, cx: view.cx, cy: view.cy, moved: false }; });
  window.addEventListener("mouseup", (e) => {
    if (drag && !drag.moved && e.target === canvas) { const i = nearest(e.offsetX, e.offsetY); if (i >= 0) copy(data.w[i]); }
    drag = null;
  });
  canvas.addEventListener("mousemove", (e) => {
    if (drag) {
      const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) { view.cx = drag.cx - dx / (view.zoom * base); view.cy = drag.cy - dy / (view.zoom * base);
        tip.hidden = true; draw(); return; }
    }
    const i = nearest(e.offsetX, e.offsetY);
    if (i !== hovered) { hovered = i; draw(); }
    show(i, e.offsetX, e.offsetY);
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; if (hovered >= 0) { hovered = -1; draw(); } });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const factor = Math.exp(-e.deltaY * 0.0015);
    const mx = view.cx + (e.offsetX - width / 2) / (view.zoom * base), my = view.cy + (e.offsetY - height / 2) / (view.zoom * base);
    view.zoom = Math.min(200, Math.max(0.5, view.zoom * factor));
    view.cx = mx - (e.offsetX - width / 2) / (view.zoom * base); view.cy = my - (e.offsetY - height / 2) / (view.zoom * base);
    draw();
  }, { passive: false });
  window.addEventListener("keydown", (e) => {
    if (e.target === filter) return;
    if (e.key === "0") { view.zoom = 1; view.cx = view.cy = 0.5; draw(); }
    if (e.key === "Escape") { alone = null; mark(); draw(); }
  });

  function mark() {
    for (const li of legend.children) {
      const t = Number(li.dataset.topic);
      li.classList.toggle("on", alone === t);
      li.classList.toggle("off", !visible(t) && t >= 0);
    }
  }

  data.topics.forEach((topic, t) => {
    const li = document.createElement("li"); li.dataset.topic = String(t); li.title = topic.name;
    const dot = document.createElement("span"); dot.className = "dot"; dot.style.background = topic.color;
    const name = document.createElement("span"); name.className = "name"; name.textContent = `${t + 1}. ${topic.name}`;
    const size = document.createElement("span"); size.className = "size"; size.textContent = String(topic.size);
    li.append(dot, name, size);
    li.addEventListener("click", () => { alone = alone === t ? null : t; mark(); draw(); });
    legend.append(li);
  });
  if (data.outliers) {
    const li = document.createElement("li"); li.dataset.topic = "-1";
    const dot = document.createElement("span"); dot.className = "dot"; dot.style.background = OUTLIER;
    const name = document.createElement("span"); name.className = "name"; name.textContent = "in no topic";
    const size = document.createElement("span"); size.className = "size"; size.textContent = String(data.outliers);
    li.append(dot, name, size); legend.append(li);
  }
  filter.addEventListener("input", () => {
    const words = filter.value.trim().toLowerCase();
    matching = words ? new Set(data.topics.map((topic, t) => (topic.name.toLowerCase().includes(words) ? t : -1))) : null;
    mark(); draw();
  });
  const unit = data.level === "files" ? "files" : "passages";
  document.getElementById("summary").textContent =
    `${data.total} ${unit}, ${data.topics.length} topics, ${data.outliers} in none` +
    (data.total > n ? ` (the map shows ${n} of them)` : "");
  window.semsearchMap = { points: n, screenOf: (i) => [sx(data.x[i]), sy(data.y[i])] };
  new ResizeObserver(resize).observe(stage);
  resize();
})();
