// milkcrate's only script. Every page works without it; it adds confirmations, the dashboard's
// self-refresh, and live logs.
"use strict";

// Apps served under a path share this origin. milkcrate refuses to serve any service-worker
// script, but a worker registered before that (or by an older version) could still sit over
// these pages: every admin page removes any it finds.
if (navigator.serviceWorker && navigator.serviceWorker.getRegistrations) {
  navigator.serviceWorker.getRegistrations()
    .then((regs) => regs.forEach((r) => r.unregister()))
    .catch(() => { /* not allowed here: nothing to remove */ });
}

// One confirmation for destructive forms (data-confirm), never two.
// The question sits on the form, or on the button that submitted it (the dashboard's rows
// share one form).
document.addEventListener("submit", (event) => {
  const question = (event.submitter && event.submitter.getAttribute("data-confirm")) ||
    event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// The dashboard table refreshes itself every 5 s unless paused.
const rows = document.getElementById("app-rows");
if (rows) {
  const toggle = document.getElementById("auto-refresh");
  setInterval(async () => {
    if (toggle && !toggle.checked) return;
    if (document.activeElement && rows.contains(document.activeElement)) return; // keep keyboard focus
    try {
      const resp = await fetch(rows.dataset.refresh, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (resp.ok) rows.innerHTML = await resp.text();
    } catch (_) { /* offline for a moment: try again next tick */ }
  }, 5000);
}

// Appends server-sent log lines to a <pre>, keeping it scrolled to the end.
function streamLog(pre, url, onDone) {
  const source = new EventSource(url);
  let first = true;
  source.addEventListener("line", (e) => {
    if (first && onDone) { pre.textContent = ""; }
    first = false;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent += JSON.parse(e.data);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("done", (e) => {
    source.close();
    if (onDone) onDone(e.data);
  });
  return source;
}

// The deploy page: the build log live, the steps it has reached, then the result.
const deployLog = document.getElementById("deploy-log");
const steps = document.getElementById("deploy-steps");
function markStep(reached) {
  if (!steps) return;
  const items = [...steps.querySelectorAll("li")];
  const at = items.findIndex((li) => li.dataset.step === reached);
  items.forEach((li, i) => {
    li.classList.toggle("done", i < at || reached === "succeeded");
    li.classList.toggle("current", i === at && reached !== "succeeded");
    if (i === at) li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
  });
}
if (steps) markStep(document.getElementById("deploy-status").dataset.status);
if (deployLog && deployLog.dataset.events) {
  const seen = new MutationObserver(() => {
    const text = deployLog.textContent;
    if (/^Deployed /m.test(text)) markStep("succeeded");
    else if (/Starting (container|milkcrate-)/.test(text)) markStep("starting");
    else if (/Building /.test(text)) markStep("building");
    else if (/Pulling /.test(text)) markStep("pulling");
  });
  seen.observe(deployLog, { childList: true, characterData: true, subtree: true });
  streamLog(deployLog, deployLog.dataset.events, () => window.location.reload());
}

// The logs page: follow new lines on request.
const follow = document.getElementById("follow-logs");
const appLog = document.getElementById("app-log");
if (follow && appLog) {
  let source = null;
  follow.addEventListener("change", () => {
    if (follow.checked) {
      source = streamLog(appLog, follow.dataset.events, null);
    } else if (source) {
      source.close();
      source = null;
    }
  });
}

// Volume uploads: files dropped anywhere on the upload form go into its file picker.
for (const zone of document.querySelectorAll("form.dropzone")) {
  const input = zone.querySelector("input[type=file]");
  if (!input) continue;
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length) input.files = e.dataTransfer.files;
  });
}
