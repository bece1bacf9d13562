// JobServ web UI: the live console. Fetches the log in slices from `data-console` with `?offset=N&wait=S`
// (a long poll); each reply says where the next slice starts (X-Offset), the run's status (X-Run-Status)
// and the log's length (X-Log-Length). The offset only moves with what was received, so after an error
// (a node died; the load balancer sends the retry elsewhere) it resumes exactly where it was: nothing
// twice, nothing missed.
"use strict";
(function () {
  const pre = document.querySelector("pre.console[data-console]");
  if (!pre) return;
  const url = pre.dataset.console;
  const statusEl = document.getElementById("run-status");
  const progress = document.getElementById("console-progress");
  const progressRe = pre.dataset.progress ? new RegExp(pre.dataset.progress) : null;
  const failRe = /(^|\b)(error|fail(ed|ure)?|fatal|panic(ked)?|traceback)\b/i;
  const terminal = new Set(["PASSED", "FAILED"]);
  let offset = Number(pre.dataset.start || "0");
  let partial = "";
  const decoder = new TextDecoder();

  function appendLines(text) {
    const lines = (partial + text).split("\n");
    partial = lines.pop();
    const frag = document.createDocumentFragment();
    for (const line of lines) {
      const span = document.createElement("span");
      span.textContent = line + "\n";
      if (failRe.test(line)) span.className = "fail";
      if (progressRe && progress) {
        const m = progressRe.exec(line);
        if (m && m.groups && m.groups.percent) progress.value = Number(m.groups.percent);
      }
      frag.appendChild(span);
    }
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.appendChild(frag);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function setStatus(s) {
    if (!statusEl || !s || statusEl.textContent === s) return;
    statusEl.textContent = s;
    statusEl.className = "badge s-" + s;
    document.body.dataset.runStatus = s;
    const actions = document.getElementById("run-actions");
    if (actions) actions.dataset.runState = terminal.has(s) ? "done" : "active";
  }

  async function poll() {
    for (;;) {
      try {
        const r = await fetch(url + "?offset=" + offset + "&wait=20", { credentials: "same-origin" });
        if (r.status === 401 || r.status === 403) { location.reload(); return; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        const body = new Uint8Array(await r.arrayBuffer());
        offset = Number(r.headers.get("X-Offset") || offset + body.length);
        if (body.length) appendLines(decoder.decode(body, { stream: true }));
        const status = r.headers.get("X-Run-Status");
        setStatus(status);
        const length = Number(r.headers.get("X-Log-Length") || "0");
        if (terminal.has(status) && offset >= length) {
          if (partial) { appendLines("\n"); }
          document.body.dataset.consoleDone = "1";
          return;
        }
      } catch (e) {
        await new Promise((res) => setTimeout(res, 1000));
      }
    }
  }
  poll();
})();
