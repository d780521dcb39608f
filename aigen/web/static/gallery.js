// Live updates. The page asks /api/live what changed: every few seconds while something is being made
// (data-poll-ms), and only now and then when nothing is (data-idle-poll-ms, a conditional request answered
// 304 when nothing changed; 0: only when the tab is shown again). A hidden tab asks nothing.
// - the counts at the top follow;
// - a generation started elsewhere appears at the top (page 1 without filters);
// - a section whose version tag changed is fetched again and merged in place: a file made since appears,
//   files already shown are kept as they are (a video playing keeps playing);
// - progress bars and per-asset progress are drawn from the JSON;
// - a generation that finishes (or stalls) is announced to screen readers.
(function () {
  "use strict";
  var body = document.body;
  var list = document.querySelector("[data-live-list]");
  var single = document.querySelector('section.generation[data-full="1"]');
  if (!list && !single) { return; }
  var fast = parseInt(body.getAttribute("data-poll-ms"), 10) || 3000;
  var idle = parseInt(body.getAttribute("data-idle-poll-ms"), 10);
  if (isNaN(idle)) { idle = 20000; }
  var etag = null;
  var timer = null;
  var inflight = false;
  var busy = Array.prototype.some.call(
    document.querySelectorAll('section.generation[data-status="Processing"]'),
    function (s) { var st = s.getAttribute("data-state"); return st !== "stalled" && st !== "no_worker"; });

  // One polite live region for the whole page, present before anything is said in it.
  var announcer = document.createElement("div");
  announcer.className = "visually-hidden";
  announcer.setAttribute("role", "status");
  announcer.setAttribute("aria-live", "polite");
  announcer.id = "live-announcer";
  body.appendChild(announcer);
  function announce(text) {
    // A change of text is what is read; clear first so the same words twice are read twice.
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function params() { return new URLSearchParams(window.location.search); }
  function pageNo() { return params().get("page") || "1"; }
  // New generations are put in place only on the first page of the unfiltered gallery: elsewhere the page
  // shows a slice the server chose (a page, a search), and only its own sections are updated.
  function mayInsert() {
    if (!list) { return false; }
    var p = params();
    var others = Array.from(p.keys()).filter(function (k) { return k !== "page"; });
    return others.length === 0 && pageNo() === "1";
  }
  function liveUrl() {
    if (single) { return "/api/live?g=" + encodeURIComponent(single.getAttribute("data-id")); }
    return "/api/live?page=" + encodeURIComponent(pageNo());
  }

  function getText(url) {
    return fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    });
  }
  function parse(html) {
    return new DOMParser().parseFromString(html, "text/html");
  }

  // -- merging a fresh section into the one on the page --------------------------------------------------
  function keyed(el) {
    var out = {};
    Array.prototype.forEach.call(el.children, function (c) {
      var k = c.getAttribute("data-live-key");
      if (k) { out[k] = c; }
    });
    return out;
  }
  function mergeChildren(old, fresh) {
    var have = keyed(old);
    var keep = new Set();
    var cursor = null;
    Array.from(fresh.children).forEach(function (child) {
      var k = child.getAttribute("data-live-key");
      if (!k) { return; }
      var cur = have[k];
      var node = cur;
      if (cur) {
        if (child.getAttribute("data-live") === "list") {
          mergeChildren(cur, child);
        } else if (k.indexOf("a-") !== 0 && cur.outerHTML !== child.outerHTML) {
          // A made file ("a-" keys) never changes: it is kept, with its playback. Anything else is swapped.
          document.adoptNode(child);
          cur.replaceWith(child);
          node = child;
        }
      } else {
        node = document.adoptNode(child);
        if (cursor) { cursor.after(node); } else { old.insertBefore(node, old.firstElementChild); }
      }
      keep.add(node);
      cursor = node;
    });
    Array.prototype.slice.call(old.children).forEach(function (c) {
      if (c.hasAttribute("data-live-key") && !keep.has(c)) { c.remove(); }
    });
  }
  function merge(old, fresh) {
    ["class", "data-status", "data-state", "data-v"].forEach(function (a) {
      old.setAttribute(a, fresh.getAttribute(a) || "");
    });
    mergeChildren(old, fresh);
    document.dispatchEvent(new CustomEvent("aigen:updated", {detail: {id: old.getAttribute("data-id")}}));
  }

  function promptOf(sec) {
    var p = sec.querySelector(".prompt");
    var text = p ? p.textContent.trim() : "";
    return text.length > 80 ? text.slice(0, 77) + "..." : text;
  }
  function sayChange(sec, before, g) {
    var name = "\u201c" + promptOf(sec) + "\u201d";
    if (before.status === "Processing" && g.status === "Completed") {
      announce("Finished: " + name + " is ready.");
    } else if (before.status === "Processing" && g.status === "Failed") {
      announce("Finished with failures: " + name + ". Retry makes only the missing ones.");
    } else if (g.status === "Processing" && (g.state === "stalled" || g.state === "no_worker") &&
               before.state !== g.state) {
      announce("Stalled: " + name + ". No process is working on it.");
    }
  }

  function refresh(sec, g) {
    var before = {status: sec.getAttribute("data-status"), state: sec.getAttribute("data-state")};
    var id = sec.getAttribute("data-id");
    if (sec.getAttribute("data-full") === "1") {
      // A generation's own page: its details table changes too. ?live=1: not counted as another view.
      return getText("/g/" + id + "?live=1").then(function (html) {
        var doc = parse(html);
        var fresh = doc.querySelector("section.generation");
        if (!fresh) { return; }
        merge(sec, fresh);
        var details = doc.querySelector("section.details");
        var mine = document.querySelector("section.details");
        if (details && mine && details.outerHTML !== mine.outerHTML) {
          mine.replaceWith(document.adoptNode(details));
        }
        sayChange(sec, before, g);
      });
    }
    return getText("/g/" + id + "/section").then(function (html) {
      var fresh = parse(html).querySelector("section.generation");
      if (!fresh) { return; }
      merge(sec, fresh);
      sayChange(sec, before, g);
    });
  }

  function drawProgress(sec, g) {
    if (!g.assets) { return; }
    var bar = sec.querySelector(".processing progress");
    var text = sec.querySelector(".progress-text");
    if (bar) { bar.max = g.total; bar.value = g.done; }
    if (text) { text.textContent = g.done + " of " + g.total; }
    g.assets.forEach(function (a) {
      var tile = sec.querySelector('[data-pending="' + a.id + '"] .pending-state');
      if (!tile) { return; }
      if (a.status === "running") {
        tile.textContent = "making" + (a.progress ? " " + Math.round(a.progress * 100) + "%" : "");
      }
    });
  }

  function drawCounts(d) {
    var box = document.querySelector(".counts");
    if (!box) { return; }
    var set = function (name, n) {
      var el = box.querySelector('[data-count="' + name + '"]');
      if (el && el.textContent !== String(n)) { el.textContent = String(n); }
    };
    set("total", d.total);
    ["Completed", "Processing", "Failed"].forEach(function (k) { set(k, d.counts[k]); });
    box.hidden = d.total === 0;
  }

  function apply(d) {
    busy = d.busy;
    if (list) { drawCounts(d); }
    var work = [];
    var fresh = [];
    d.generations.forEach(function (g) {
      var sec = document.getElementById("g-" + g.id);
      if (sec) {
        drawProgress(sec, g);
        if (sec.getAttribute("data-v") !== g.v) { work.push(refresh(sec, g)); }
      } else if (mayInsert()) {
        fresh.push(g);
      }
    });
    if (!mayInsert()) { return Promise.all(work); }
    // New ones: fetch their sections, then put each after the one before it in the server's order
    // (sections already on the page are never moved: a playing video would stop).
    var loads = fresh.map(function (g) {
      return getText("/g/" + g.id + "/section").then(function (html) {
        return parse(html).querySelector("section.generation");
      }).catch(function () { return null; });
    });
    return Promise.all(work.concat([Promise.all(loads).then(function (nodes) {
      var made = {};
      fresh.forEach(function (g, i) { if (nodes[i]) { made[g.id] = nodes[i]; } });
      var ids = d.generations.map(function (g) { return g.id; });
      var prev = null;
      var added = [];
      ids.forEach(function (id) {
        var node = document.getElementById("g-" + id);
        if (!node && made[id]) {
          node = document.adoptNode(made[id]);
          if (prev) { prev.after(node); } else { list.insertBefore(node, list.firstElementChild); }
          added.push(node);
        }
        if (node) { prev = node; }
      });
      // Gone from this page (moved to the next one, or deleted): no longer shown here.
      Array.prototype.slice.call(list.querySelectorAll(":scope > section.generation")).forEach(function (s) {
        if (ids.indexOf(s.getAttribute("data-id")) < 0) { s.remove(); }
      });
      var empty = list.querySelector(":scope > section.empty");
      if (empty && ids.length) { empty.remove(); }
      if (added.length) {
        announce(added.length === 1 ? "New generation: \u201c" + promptOf(added[0]) + "\u201d."
                                    : added.length + " new generations.");
        document.dispatchEvent(new CustomEvent("aigen:updated", {detail: {}}));
      }
    })]));
  }

  function poll() {
    timer = null;
    if (document.hidden) { return; }  // asked again when the tab is shown
    inflight = true;
    var headers = {"Accept": "application/json"};
    if (etag) { headers["If-None-Match"] = etag; }
    fetch(liveUrl(), {credentials: "same-origin", cache: "no-store", headers: headers})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
        if (r.status === 304) { return null; }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        var tag = r.headers.get("ETag");
        return r.json().then(function (d) { return {d: d, tag: tag}; });
      })
      .then(function (res) {
        if (!res) { return; }
        return apply(res.d).then(function () { etag = res.tag; });
      })
      .catch(function () { /* asked again at the next tick */ })
      .then(function () { inflight = false; schedule(); });
  }

  function schedule() {
    if (timer !== null || inflight || document.hidden) { return; }
    var wait = busy ? fast : idle;
    if (!wait) { return; }  // nothing running and no idle checks: the next look is when the tab is shown
    timer = window.setTimeout(poll, wait);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (timer !== null) { window.clearTimeout(timer); timer = null; }
    } else if (!inflight) {
      if (timer !== null) { window.clearTimeout(timer); timer = null; }
      poll();
    }
  });
  schedule();
})();
