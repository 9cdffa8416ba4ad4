// The dashboard's only script: live regions, following a submitted job, the drop zone.
// Server-rendered HTML (escaped by the templates) replaces live regions; everything else is set as
// text or attributes, never parsed as HTML.
"use strict";

const POLL_MS = 1000;

function poll(fn) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    try { stopped = (await fn()) === false; } catch (e) { /* the next tick tries again */ }
    if (!stopped) setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
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
  });
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
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  };
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

document.addEventListener("DOMContentLoaded", () => { liveRegions(); follow(); dropZone(); });
