// The session viewer's one script (docs/viewer.md): paging, live mode, previews, keys.
// The server renders every event as escaped HTML; this script only moves those nodes and
// sets textContent. It never builds markup from event data.
"use strict";

(function () {
  const timeline = document.getElementById("timeline");
  if (timeline) initTimeline(timeline);
  document.addEventListener("click", onPreview);
  document.addEventListener("keydown", onKey);

  function initTimeline(tl) {
    const moreButton = document.getElementById("more");
    const liveBox = document.getElementById("live");
    const status = document.getElementById("live-status");
    const marker = document.getElementById("new-events");
    const loaded = document.getElementById("loaded");
    const total = document.getElementById("total");
    const params = new URLSearchParams(location.search);
    const pollMs = Math.max(200, Number(params.get("poll")) || 2000);
    let cursor = tl.dataset.cursor || ""; // the next page's key in (ts, seq) order
    let liveCursor = tl.dataset.liveCursor || ""; // commit order: what came since the open
    let more = tl.dataset.more === "1";
    let busy = false;
    let timer = null;
    let failures = 0;
    const unseen = [];

    function context(live) {
      // What the last page left open: a run (its start) and a block of chunks.
      const q = new URLSearchParams({ session: tl.dataset.session });
      if (live) {
        q.set("live", "1");
        if (liveCursor) q.set("cursor", liveCursor);
      } else if (cursor) {
        q.set("after", cursor);
      }
      let container = tl;
      const last = tl.lastElementChild;
      if (last && last.matches("section.run.open")) {
        q.set("run", last.dataset.start || "0");
        container = last.querySelector(":scope > .run-body") || last;
      }
      const tail = container.lastElementChild;
      if (tail && tail.matches(".chunks")) q.set("chunks", "1");
      return q;
    }

    function merge(container, nodes) {
      for (const node of nodes) {
        const kind = node.dataset ? node.dataset.cont : undefined;
        if (kind === "run") {
          const run = container.lastElementChild;
          if (run && run.matches("section.run.open")) {
            const body = run.querySelector(":scope > .run-body");
            const newBody = node.querySelector(":scope > .run-body");
            merge(body, newBody ? Array.from(newBody.children) : []);
            for (const child of Array.from(node.children)) {
              if (child !== newBody) run.appendChild(child);
            }
            if (!node.classList.contains("open")) {
              run.classList.remove("open");
              run.dataset.status = node.dataset.status;
              const st = run.querySelector(":scope > .run-head .run-status");
              const du = run.querySelector(":scope > .run-head .run-duration");
              if (st) st.textContent = node.dataset.status || "";
              if (du) du.textContent = node.dataset.duration || "";
            }
            continue;
          }
        } else if (kind === "chunks") {
          const block = container.lastElementChild;
          if (block && block.matches(".chunks")) {
            const pre = block.querySelector("pre");
            const src = node.querySelector("pre");
            if (pre && src) {
              for (const span of Array.from(src.children)) pre.appendChild(span);
              continue;
            }
          }
        }
        container.appendChild(node);
      }
    }

    function firstVisible() {
      for (const el of tl.querySelectorAll("[data-event-id]")) {
        const r = el.getBoundingClientRect();
        if (r.bottom > 0) return el;
      }
      return null;
    }

    function keyOf(el) {
      return [Number(el.dataset.ts) || 0, Number(el.dataset.seq) || 0];
    }

    function cmp(a, b) {
      return a[0] - b[0] || a[1] - b[1];
    }

    function unitOf(el) {
      // The element an event is shown as at the top of its container.
      if (el.matches(".chunk")) return el.closest(".chunks") || el;
      if (el.matches(".run-head")) return el.closest("section.run") || el;
      return el;
    }

    function standalone(el) {
      // A live event placed among rendered ones: shown on its own.
      el.remove();
      el.classList.remove("paired");
      if (!el.matches(".chunk")) return el;
      const block = document.createElement("div");
      block.className = "chunks";
      const pre = document.createElement("pre");
      pre.className = "text";
      pre.appendChild(el);
      block.appendChild(pre);
      return block;
    }

    function placeInOrder(content, fresh) {
      // Live events at their (ts, seq) place among the rendered ones; those past the last
      // rendered event stay in `content` (appended) or, while pages remain, wait for them.
      const rendered = Array.from(tl.querySelectorAll("[data-event-id]:not(.paired)"));
      let tail = null;
      for (const el of rendered) if (!tail || cmp(keyOf(el), keyOf(tail)) >= 0) tail = el;
      for (const el of Array.from(content.querySelectorAll("[data-event-id]"))) {
        const k = keyOf(el);
        if (tail && cmp(k, keyOf(tail)) <= 0) {
          const ref = rendered.find((r) => cmp(keyOf(r), k) > 0);
          const node = standalone(el);
          if (ref) unitOf(ref).before(node);
          else unitOf(tail).after(node);
          fresh.push(el);
        } else if (more) {
          el.remove();
        }
      }
      for (const block of Array.from(content.querySelectorAll(".chunks"))) {
        if (!block.querySelector("[data-event-id]")) block.remove();
      }
    }

    function append(html, live) {
      const tpl = document.createElement("template");
      tpl.innerHTML = html; // server-rendered, escaped; inert until inserted (CSP applies)
      for (const el of tpl.content.querySelectorAll("[data-event-id]")) {
        const id = el.dataset.eventId;
        if (tl.querySelector('[data-event-id="' + CSS.escape(id) + '"]')) el.remove();
      }
      // Keep what the reader looks at where it is, whatever changes around it.
      const anchor = firstVisible();
      const before = anchor ? anchor.getBoundingClientRect().top : 0;
      const fresh = [];
      if (live) placeInOrder(tpl.content, fresh);
      fresh.push(...tpl.content.querySelectorAll("[data-event-id]"));
      merge(tl, Array.from(tpl.content.children));
      if (anchor) {
        const delta = anchor.getBoundingClientRect().top - before;
        if (delta) window.scrollBy(0, delta);
      }
      loaded.textContent = String(tl.querySelectorAll("[data-event-id]").length);
      if (live) noteNew(fresh);
    }

    function noteNew(fresh) {
      const h = window.innerHeight;
      for (const el of fresh) {
        if (el.getBoundingClientRect().top >= h) unseen.push(el);
      }
      showMarker();
    }

    function showMarker() {
      const h = window.innerHeight;
      while (unseen.length && unseen[0].getBoundingClientRect().top < h) unseen.shift();
      if (unseen.length) {
        marker.textContent = unseen.length + (unseen.length === 1 ? " new event ↓" : " new events ↓");
        marker.hidden = false;
      } else {
        marker.hidden = true;
      }
    }

    async function fetchPage(live) {
      if (busy) return;
      busy = true;
      tl.setAttribute("aria-busy", "true");
      try {
        const resp = await fetch(tl.dataset.api + "?" + context(live).toString(), {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (resp.status === 401) {
          location.assign(location.pathname.replace(/\/sessions\/.*$/, "/login"));
          return;
        }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        const page = await resp.json();
        if (page.html) append(page.html, live);
        if (live) {
          liveCursor = page.cursor || liveCursor;
        } else {
          cursor = page.cursor || cursor;
          more = page.more;
        }
        total.textContent = String(page.total);
        moreButton.hidden = !more;
        failures = 0;
        status.textContent = liveBox.checked ? "live" : "";
      } catch (err) {
        failures += 1;
        status.textContent = "could not load events (" + err.message + "); retrying";
      } finally {
        busy = false;
        tl.setAttribute("aria-busy", "false");
      }
    }

    function schedule() {
      clearTimeout(timer);
      if (!liveBox.checked) {
        status.textContent = "";
        return;
      }
      const wait = pollMs * Math.min(8, 2 ** failures);
      timer = setTimeout(async function () {
        await fetchPage(true);
        schedule();
      }, wait);
    }

    moreButton.addEventListener("click", function () {
      fetchPage(false);
    });
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (entries) {
        if (entries.some((e) => e.isIntersecting) && more) fetchPage(false);
      }, { rootMargin: "400px" }).observe(moreButton);
    }
    liveBox.addEventListener("change", schedule);
    marker.addEventListener("click", function () {
      const target = unseen[0];
      if (target) {
        target.scrollIntoView({ block: "start" });
        target.focus({ preventScroll: true });
      }
      showMarker();
    });
    window.addEventListener("scroll", showMarker, { passive: true });
    status.textContent = liveBox.checked ? "live" : "";
    schedule();
  }

  async function onPreview(ev) {
    const button = ev.target instanceof Element ? ev.target.closest("button.preview") : null;
    if (!button) return;
    const out = button.parentElement.querySelector(".preview-text");
    if (!out.hidden) {
      out.hidden = true;
      return;
    }
    button.disabled = true;
    try {
      const resp = await fetch(button.dataset.src, { credentials: "same-origin" });
      out.textContent = resp.ok ? await resp.text() : "preview failed: HTTP " + resp.status;
    } catch (err) {
      out.textContent = "preview failed: " + err.message;
    } finally {
      out.hidden = false;
      button.disabled = false;
    }
  }

  function onKey(ev) {
    // j / k: next / previous event; ignored while typing in a field.
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target instanceof Element && ev.target.closest("input, textarea, select")) return;
    if (ev.key !== "j" && ev.key !== "k") return;
    const items = Array.from(document.querySelectorAll("article.ev:not(.paired), .chunks"));
    if (!items.length) return;
    const current = document.activeElement ? document.activeElement.closest("article.ev:not(.paired), .chunks") : null;
    let i = current ? items.indexOf(current) : -1;
    i = ev.key === "j" ? Math.min(items.length - 1, i + 1) : Math.max(0, i - 1);
    const el = items[i];
    if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "-1");
    el.focus();
    el.scrollIntoView({ block: "nearest" });
    ev.preventDefault();
  }
})();
