// Video tiles: the poster in the page is the 256 px preview (light: a page of 50 videos fetches
// 50 small pictures, and no video until one is played). On a sharp screen, a tile that comes near
// the viewport gets the 512 px preview instead. Tiles added later (the live refresh) too.
(function () {
  "use strict";
  if (!(window.devicePixelRatio > 1.25) || !("IntersectionObserver" in window)) { return; }

  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (!e.isIntersecting) { return; }
      var v = e.target;
      seen.unobserve(v);
      var sharp = v.getAttribute("data-poster-2x");
      if (sharp && v.getAttribute("poster") !== sharp) {
        // Swap only once the sharp one is here, so the tile never shows nothing.
        var img = new Image();
        img.onload = function () { v.setAttribute("poster", sharp); };
        img.src = sharp;
      }
    });
  }, {rootMargin: "200px"});

  function watch(root) {
    Array.prototype.forEach.call(root.querySelectorAll("video[data-poster-2x]"), function (v) {
      seen.observe(v);
    });
  }

  watch(document);
  new MutationObserver(function (changes) {
    changes.forEach(function (c) {
      Array.prototype.forEach.call(c.addedNodes, function (n) {
        if (n.nodeType === 1) { watch(n); }
      });
    });
  }).observe(document.body, {childList: true, subtree: true});
})();
