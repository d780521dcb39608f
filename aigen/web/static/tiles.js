// Video tiles are links with a preview picture (a page of 50 <video> elements costs seconds of the
// browser's main thread, and each could fetch the file): a click plays the video in its tile. Without
// JavaScript, or with a modifier key, the link opens the file. A handler that already took the click
// (event.defaultPrevented, e.g. a viewer) wins.
(function () {
  "use strict";

  document.addEventListener("click", function (e) {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) { return; }
    var tile = e.target.closest ? e.target.closest("a.tile[data-video]") : null;
    if (!tile) { return; }
    e.preventDefault();
    var img = tile.querySelector("img");
    var v = document.createElement("video");
    v.controls = true;
    v.autoplay = true;
    v.playsInline = true;
    v.preload = "auto";
    v.setAttribute("aria-label", tile.getAttribute("data-label") || "");
    if (img) {
      v.poster = img.currentSrc || img.src;
      ["width", "height"].forEach(function (k) { if (img.getAttribute(k)) { v.setAttribute(k, img.getAttribute(k)); } });
    }
    v.src = tile.getAttribute("data-video");
    tile.replaceWith(v);
    v.focus();
  });
})();
