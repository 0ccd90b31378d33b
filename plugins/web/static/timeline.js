// framewatch timeline page: clicking an event or a timeline mark seeks the player, and the search
// box finds this recording's events through the API. Event text is untrusted: it only ever reaches
// the page through textContent (or Jinja's autoescape on the server), never as HTML.
"use strict";
(() => {
  const player = document.getElementById("player");
  if (!player) return;
  const timeline = document.getElementById("timeline");

  function seek(t) {
    if (!Number.isFinite(t)) return;
    player.currentTime = t;
    history.replaceState(null, "", "#t=" + t); // a shareable link to this moment
  }

  document.addEventListener("click", (ev) => {
    const el = ev.target.closest("[data-start]");
    if (!el) return;
    ev.preventDefault();
    seek(parseFloat(el.dataset.start));
  });

  function layout() {
    const duration = parseFloat(timeline.dataset.duration) || player.duration;
    if (!(duration > 0)) return;
    for (const m of timeline.querySelectorAll(".mark")) {
      const start = parseFloat(m.dataset.start);
      const end = parseFloat(m.dataset.end);
      m.style.left = (100 * start) / duration + "%";
      m.style.width = Math.max(0.5, (100 * (end - start)) / duration) + "%";
    }
  }
  layout();
  player.addEventListener("loadedmetadata", layout);

  player.addEventListener("timeupdate", () => {
    const t = player.currentTime;
    for (const el of document.querySelectorAll(".event[data-start], .mark")) {
      const start = parseFloat(el.dataset.start), end = parseFloat(el.dataset.end);
      // Chapters tile the recording: one ends where the next begins, so only one is current.
      const chapter = el.closest("#chapters") !== null;
      const on = t >= start && (chapter ? t < end : t <= end);
      el.classList.toggle("current", on);
    }
  });

  const deepLink = /^#t=([0-9.]+)/.exec(location.hash);
  if (deepLink) {
    const t = parseFloat(deepLink[1]);
    if (player.readyState >= 1) player.currentTime = t;
    else player.addEventListener("loadedmetadata", () => { player.currentTime = t; }, { once: true });
  }

  const form = document.getElementById("find");
  const found = document.getElementById("found");
  function say(text) {
    const li = document.createElement("li");
    li.textContent = text;
    found.append(li);
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    found.replaceChildren();
    const q = form.elements.q.value.trim();
    if (!q) return;
    const params = new URLSearchParams({ q, recording_id: form.dataset.recordingId });
    let hits;
    try {
      const r = await fetch("/api/search?" + params, { headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      hits = (await r.json()).hits;
    } catch (err) {
      say("Search failed: " + err.message);
      return;
    }
    if (!hits.length) say("No matching events or speech.");
    for (const h of hits) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = h.kind === "speech" ? "event speech" : "event";
      b.dataset.start = String(h.start_s);
      b.dataset.end = String(h.end_s);
      const t = document.createElement("span");
      t.className = "t";
      t.textContent = h.time;
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = h.label;
      b.append(t, " ", label);
      const desc = document.createElement("span");
      desc.className = "desc";
      desc.textContent = h.description;
      li.append(b, " ", desc);
      found.append(li);
    }
  });
})();
