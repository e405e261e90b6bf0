// The dashboard's only script: fetch server-rendered fragments with the bearer token (asked
// once, kept in sessionStorage), load view images the same way, refresh progress, pick views.
"use strict";
(function () {
  const KEY = "distill-token";
  const content = document.getElementById("content");
  const tokenForm = document.getElementById("token-form");
  const problem = document.getElementById("problem");
  const forget = document.getElementById("forget-token");
  const needsToken = document.body.dataset.tokenRequired === "true";
  let timer = null;

  function headers() {
    const token = sessionStorage.getItem(KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function askToken(reason) {
    document.getElementById("token-reason").textContent = reason;
    tokenForm.hidden = false;
    content.hidden = true;
    if (timer !== null) { clearInterval(timer); timer = null; }
  }

  function say(text) {
    problem.textContent = text;
    problem.hidden = !text;
  }

  async function loadImages() {
    for (const img of content.querySelectorAll("img[data-src]")) {
      const r = await fetch(img.dataset.src, { headers: headers() });
      if (!r.ok) {
        const body = await r.json().catch(() => ({ detail: r.statusText }));
        say("view image: " + body.detail);
        continue;
      }
      img.src = URL.createObjectURL(await r.blob());
      img.removeAttribute("data-src");
    }
  }

  function wireViewForm() {
    const form = document.getElementById("view-form");
    if (!form) return;
    const go = (slot, sample) => {
      history.replaceState(null, "", "?slot=" + slot + "&sample=" + sample);
      load();
    };
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      go(form.elements.slot.value, form.elements.sample.value);
    });
    document.getElementById("random-view").addEventListener("click", () => {
      const pick = (n) => Math.floor(Math.random() * Number(n));
      go(pick(form.dataset.views), pick(form.dataset.samples));
    });
  }

  async function load() {
    if (needsToken && !sessionStorage.getItem(KEY)) {
      askToken("This service needs a bearer token (the one in its --token-file).");
      return false;
    }
    const r = await fetch(content.dataset.fragment + location.search, { headers: headers() });
    if (r.status === 401) {
      sessionStorage.removeItem(KEY);
      askToken("That token was refused; enter the service's bearer token.");
      return false;
    }
    if (!r.ok) {
      const body = await r.json().catch(() => ({ detail: r.statusText }));
      content.textContent = "";
      say(body.detail);
      return false;
    }
    say("");
    content.innerHTML = await r.text();
    content.hidden = false;
    forget.hidden = !sessionStorage.getItem(KEY);
    wireViewForm();
    await loadImages();
    return true;
  }

  tokenForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("token-input").value.trim());
    tokenForm.hidden = true;
    start();
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });

  async function start() {
    const ok = await load();
    const every = Number(content.dataset.refreshMs);
    if (ok && every > 0 && timer === null) timer = setInterval(load, every);
  }
  start();
})();
