"use strict";
// The dashboard: fetches the server-rendered charts with the API key kept in sessionStorage
// (this tab only, never in a URL), asks for a key when the server answers 401.
(function () {
  const STORE = "printernizer-stats-key";
  const form = document.getElementById("key-form");
  const input = document.getElementById("key");
  const error = document.getElementById("key-error");
  const panels = document.getElementById("panels");
  const base = location.pathname.replace(/\/+$/, "");

  async function load() {
    const key = sessionStorage.getItem(STORE);
    const headers = key ? { "X-API-Key": key } : {};
    let r;
    try {
      r = await fetch(base + "/panels", { headers, cache: "no-store" });
    } catch (e) {
      panels.textContent = "The server does not answer.";
      return;
    }
    if (r.status === 401) {
      if (key) {
        sessionStorage.removeItem(STORE);
        error.textContent = "That key was not accepted.";
      }
      form.hidden = false;
      panels.textContent = "";
      input.focus();
      return;
    }
    if (!r.ok) {
      panels.textContent = "The statistics are unavailable (" + r.status + "); try again later.";
      return;
    }
    form.hidden = true;
    error.textContent = "";
    panels.innerHTML = await r.text();
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    sessionStorage.setItem(STORE, input.value.trim());
    input.value = "";
    load();
  });
  load();
})();
