// The console's little script: confirmations on actions, a prompt for a new branch's name, and
// the live log viewer (polls the job's log every second until the job has finished).
"use strict";

document.addEventListener("submit", (ev) => {
  const form = ev.target.closest("form[data-confirm]");
  if (!form) return;
  const ask = form.dataset.confirm;
  if (ask.startsWith("prompt:")) {
    const name = window.prompt(ask.slice(7));
    if (!name) { ev.preventDefault(); return; }
    let field = form.querySelector("input[name=branch]");
    if (!field) {
      field = document.createElement("input");
      field.type = "hidden";
      field.name = "branch";
      form.appendChild(field);
    }
    field.value = name;
  } else if (!window.confirm(ask)) {
    ev.preventDefault();
  }
});

function followLog(pre) {
  let next = 0;
  const follow = document.getElementById("follow");
  const badge = document.getElementById("job-state");
  async function poll() {
    let done = false;
    try {
      const r = await fetch(`${pre.dataset.src}?after=${next}`, { credentials: "same-origin" });
      const data = await r.json();
      if (!r.ok) throw new Error(data.error || r.statusText);
      if (data.lines.length) {
        pre.append(data.lines.join("\n") + "\n");
        if (follow && follow.checked) pre.scrollTop = pre.scrollHeight;
      }
      next = data.next;
      if (badge) {
        badge.innerHTML = "";
        const s = document.createElement("span");
        s.className = `state state-${data.state}`;
        s.textContent = data.state;
        badge.appendChild(s);
      }
      done = data.done;
    } catch (e) {
      pre.append(`[console: ${e.message}]\n`);
    }
    pre.dataset.loaded = "1";
    if (!done) setTimeout(poll, 1000);
    else pre.dataset.finished = "1";
  }
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  const pre = document.getElementById("log");
  if (pre) followLog(pre);
});
