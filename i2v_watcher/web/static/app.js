// The dashboard's only script: live regions, following a submitted job, the drop zone.
// Server-rendered HTML (escaped by the templates) replaces live regions; everything else is set as
// text or attributes, never parsed as HTML.
"use strict";

const POLL_MS = 1000;

// Live regions arrive rendered with the page, so their first refresh can wait; a followed job is
// asked about at once (a fast job may be published already).
function poll(fn, now = false) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { stopped = (await fn()) === false; } catch (e) { /* the next tick tries again */ }
    if (!stopped) setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, now ? 0 : POLL_MS);
}

function liveRegions() {
  document.querySelectorAll("[data-live]").forEach((region) => {
    poll(async () => {
      const response = await fetch(region.dataset.live, {headers: {"Accept": "text/html"}});
      if (response.ok) region.innerHTML = await response.text();
    });
  });
}

function fileUrl(rel) {
  return "/files/" + rel.split("/").map(encodeURIComponent).join("/");
}

function follow() {
  const box = document.getElementById("follow");
  if (!box) return;
  const state = document.getElementById("follow-state");
  const bar = document.getElementById("follow-progress");
  const result = document.getElementById("follow-result");
  const query = new URLSearchParams({job: box.dataset.job, since: box.dataset.since});
  poll(async () => {
    const response = await fetch("/api/job?" + query.toString());
    if (!response.ok) return true;
    const job = await response.json();
    box.dataset.state = job.state;
    if (job.state === "queued") {
      state.textContent = "Queued: " + (job.why === "ready" ? "number " + job.position + " in line" : job.why);
    } else if (job.state === "in progress") {
      state.textContent = "In progress: " + job.stage + (job.total ? " " + job.done + "/" + job.total : "")
        + " on " + job.worker_id;
      if (job.total) { bar.hidden = false; bar.max = job.total; bar.value = job.done || 0; }
    } else if (job.state === "published") {
      bar.hidden = true;
      state.textContent = "Published as " + job.name;
      if (job.quality) {  // the quality gate's judgement, as the gallery's card shows it
        const symptoms = job.quality.symptoms.map((s) => s.replace("_", " ")).join(", ");
        state.textContent += " · quality gate: " + job.quality.verdict + (symptoms ? " (" + symptoms + ")" : "");
      }
      if (job.variant) {  // one of a set: its rank among the variants published so far
        state.textContent += " · variant " + job.variant.index + " of " + job.variant.count
          + (job.variant.rank ? " · rank " + job.variant.rank + (job.variant.provisional ? " (provisional)" : "") : "");
      }
      result.replaceChildren();
      if (job.video) {
        const video = document.createElement("video");
        video.id = "follow-video";
        video.controls = true; video.muted = true; video.autoplay = true; video.loop = true;
        video.playsInline = true;
        if (job.poster) video.poster = fileUrl(job.poster);
        video.src = fileUrl(job.video);
        result.appendChild(video);
      }
      const links = document.createElement("p");
      for (const rel of job.files) {
        const a = document.createElement("a");
        a.href = fileUrl(rel) + "?download";
        a.textContent = rel.split("/").pop();
        links.append(a, " ");
      }
      result.appendChild(links);
      return false;
    } else if (job.state === "failed") {
      bar.hidden = true;
      state.textContent = "Failed (" + job.stage + "): " + job.message + (job.hint ? " — " + job.hint : "");
      const a = document.createElement("a");
      a.href = "/failed"; a.textContent = "See failed jobs";
      result.replaceChildren(a);
      return false;
    } else {
      state.textContent = "Waiting for the job to appear…";
    }
    return true;
  }, true);
}

function dropZone() {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("image");
  if (!zone || !input) return;
  const text = document.getElementById("drop-text");
  const preview = document.getElementById("preview");
  const show = () => {
    const file = input.files && input.files[0];
    if (!file) return;
    text.textContent = file.name + " (" + Math.ceil(file.size / 1024) + " KiB)";
    // A data: URL, not URL.createObjectURL: the page's Content-Security-Policy allows data: images
    // and no blob: ones, so a blob: preview would never show.
    const reader = new FileReader();
    reader.onload = () => { preview.src = reader.result; };
    reader.readAsDataURL(file);
  };
  preview.addEventListener("load", () => { preview.hidden = false; });
  preview.addEventListener("error", () => { preview.hidden = true; });  // not an image after all
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((kind) => zone.addEventListener(kind, (event) => {
    event.preventDefault(); zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((kind) => zone.addEventListener(kind, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      show();
    }
  });
}

// A thumbnail the server cannot make (the file is not an image): an empty square, not a broken-image
// icon. Errors do not bubble, hence the capture; images that failed before this script ran are found
// by their state.
function markBroken(img) {
  if (img instanceof HTMLImageElement && img.classList.contains("thumb")) img.classList.add("broken");
}
document.addEventListener("error", (event) => markBroken(event.target), true);

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("img.thumb").forEach((img) => {
    if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) markBroken(img);
  });
  liveRegions(); follow(); dropZone();
});
