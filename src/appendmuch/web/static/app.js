// appendmuch web view: live updates, the time scrubber and its play button.
// Hand-written, no library. Fragments come from the server already escaped; this
// script only places them, and writes text with textContent.
"use strict";
(function () {
  const body = document.body;
  const handlers = [];

  function fetchText(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          return response.text().then(function () { throw new Error("HTTP " + response.status); });
        }
        return response.text().then(function (text) { return { text: text, headers: response.headers }; });
      });
  }

  function withParam(url, key, value) {
    return url + (url.indexOf("?") < 0 ? "?" : "&") + key + "=" + encodeURIComponent(value);
  }

  // ------------------------------------------------------------------ live events
  const badge = document.getElementById("live");
  function setLive(state) { if (badge) { badge.dataset.state = state; } }

  function startEvents() {
    const url = body.dataset.events;
    if (!url || !window.EventSource) { return; }
    const source = new EventSource(url);
    source.addEventListener("open", function () { setLive("on"); });
    source.addEventListener("error", function () { setLive("error"); });  // it reconnects
    source.addEventListener("log", function (event) {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      setLive("on");
      handlers.forEach(function (handler) { handler(message); });
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  // A part of the page fetched again when the log grows (overview, tree, field).
  function refresher() {
    const url = body.dataset.refresh;
    const target = document.getElementById(body.dataset.target || "");
    if (!url || !target) { return; }
    let known = body.dataset.seq || "";
    let busy = false;
    let again = false;
    function run() {
      if (busy) { again = true; return; }
      busy = true;
      fetchText(url).then(function (got) { target.innerHTML = got.text; })
        .catch(function () { setLive("error"); })
        .then(function () {
          busy = false;
          if (again) { again = false; setTimeout(run, 250); }
        });
    }
    handlers.push(function (message) {
      const seq = String(message.last_change !== undefined ? message.last_change : message.last_seq);
      if (seq !== known) { known = seq; run(); }
    });
  }

  // ------------------------------------------------------------------ log page
  function logLive() {
    const rows = document.getElementById("rows");
    if (!rows || rows.dataset.tail !== "1") { return; }
    let busy = false;
    let again = false;
    function pull() {
      if (busy) { again = true; return; }
      busy = true;
      let url = withParam(rows.dataset.rowsUrl, "limit", "1000");
      if (rows.dataset.last) { url = withParam(url, "after", rows.dataset.last); }
      fetchText(url).then(function (got) {
        const next = got.headers.get("x-follow-from");
        if (got.text.trim()) {
          rows.insertAdjacentHTML("beforeend", got.text);
          const empty = document.getElementById("empty");
          if (empty) { empty.remove(); }
          rows.querySelectorAll("tr[data-seq]:not(.seen)").forEach(function (row) {
            row.classList.add("seen");
            if (rows.dataset.ready) { row.classList.add("fresh"); }
          });
        }
        if (next) { rows.dataset.last = next; }
      }).catch(function () { setLive("error"); }).then(function () {
        busy = false;
        if (again) { again = false; setTimeout(pull, 100); }
      });
    }
    rows.querySelectorAll("tr[data-seq]").forEach(function (row) { row.classList.add("seen"); });
    rows.dataset.ready = "1";
    handlers.push(function (message) {
      if (message.last_seq && String(message.last_seq) !== rows.dataset.last) { pull(); }
    });
  }

  // ------------------------------------------------------------------ namespace page
  function scrubber() {
    const form = document.getElementById("scrubber");
    const section = document.getElementById("state");
    if (!section) { return; }
    function data() {
      const node = document.getElementById("state-data");
      return node ? node.dataset : {};
    }
    let known = data().last || "";
    if (!form) {
      // no fields of its own yet: show them once it has some
      handlers.push(function (message) { if (message.changes) { window.location.reload(); } });
      return;
    }
    const slider = document.getElementById("step");
    const where = document.getElementById("where");
    const playButton = document.getElementById("play");
    const timeBox = document.getElementById("time");
    const seqBox = document.getElementById("at");
    const prev = document.getElementById("prev");
    const next = document.getElementById("next");
    const latest = document.getElementById("latest-link");
    const newer = document.getElementById("newer");
    const stateUrl = form.dataset.stateUrl;
    const pageUrl = form.dataset.pageUrl;
    let request = 0;
    let playing = null;

    function link(anchor, seq) {
      if (seq) {
        anchor.href = withParam(pageUrl, "at", seq);
        anchor.removeAttribute("aria-disabled");
      } else {
        anchor.href = "#";
        anchor.setAttribute("aria-disabled", "true");
      }
    }

    function apply(html) {
      section.innerHTML = html;
      const d = data();
      slider.max = String(Math.max(0, parseInt(d.steps, 10) - 1));
      slider.value = String(Math.max(0, parseInt(d.step, 10)));
      where.textContent = d.where;
      timeBox.value = d.time || "";
      seqBox.value = d.at || "";
      link(prev, d.prev);
      link(next, d.next);
      if (d.latest === "1") {
        history.replaceState(null, "", pageUrl);
        newer.hidden = true;
      } else if (d.at) {
        history.replaceState(null, "", withParam(pageUrl, "at", d.at));
      }
    }

    function load(key, value) {
      request += 1;
      const mine = request;
      const url = key ? withParam(stateUrl, key, value) : stateUrl;
      return fetchText(url).then(function (got) {
        if (mine === request) { apply(got.text); }
      }).catch(function (error) {
        where.textContent = "could not load that moment (" + error.message + ")";
        stop();
      });
    }

    let pending = null;
    slider.addEventListener("input", function () {
      // a moment still loading is stale now: applied, it would move the slider back
      request += 1;
      clearTimeout(pending);
      pending = setTimeout(function () { load("step", slider.value); }, 60);
    });
    timeBox.addEventListener("change", function () {
      if (timeBox.value) { load("time", timeBox.value); }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (seqBox.value) { load("at", seqBox.value); } else if (timeBox.value) { load("time", timeBox.value); }
    });
    function stepBy(delta) {
      const target = parseInt(slider.value, 10) + delta;
      if (target >= 0 && target <= parseInt(slider.max, 10)) { return load("step", String(target)); }
      return Promise.resolve();
    }
    prev.addEventListener("click", function (event) { event.preventDefault(); stepBy(-1); });
    next.addEventListener("click", function (event) { event.preventDefault(); stepBy(1); });
    latest.addEventListener("click", function (event) { event.preventDefault(); stop(); load("", ""); });

    function stop() {
      if (playing) { clearTimeout(playing); playing = null; }
      playButton.textContent = "▶";
      playButton.setAttribute("aria-label", "play through the changes");
    }
    function tick() {
      if (parseInt(slider.value, 10) >= parseInt(slider.max, 10)) { stop(); return; }
      stepBy(1).then(function () { if (playing) { playing = setTimeout(tick, 700); } });
    }
    playButton.addEventListener("click", function () {
      if (playing) { stop(); return; }
      playButton.textContent = "⏸";
      playButton.setAttribute("aria-label", "pause");
      const start = parseInt(slider.value, 10) >= parseInt(slider.max, 10)
        ? load("step", "0") : Promise.resolve();
      playing = setTimeout(function () { start.then(tick); }, 0);
    });

    handlers.push(function (message) {
      if (message.last_change === null || message.last_change === undefined) { return; }
      const seq = String(message.last_change);
      if (seq === known) { return; }
      known = seq;
      slider.max = String(Math.max(0, message.changes - 1));
      if (data().latest === "1" && !playing) {
        load("", "");
      } else {
        newer.hidden = false;
        newer.textContent = "";
        newer.append("The namespace changed since (now " + message.changes + " changes). ");
        const show = document.createElement("a");
        show.href = pageUrl;
        show.textContent = "Show the latest";
        show.addEventListener("click", function (event) { event.preventDefault(); stop(); load("", ""); });
        newer.append(show);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    refresher();
    logLive();
    scrubber();
    startEvents();
  });
})();
