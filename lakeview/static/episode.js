// Episode page: cameras play in step; the scrubber, the frame counter and every plot's cursor follow the first
// camera. Each video's frame times come from /video/<id>?meta=1 (frame i shows at times[i] seconds into its mp4).
(function () {
  "use strict";
  const player = document.getElementById("player");
  const videos = Array.from(document.querySelectorAll("video.cam"));
  const scrubber = document.getElementById("scrubber");
  const label = document.getElementById("frame");
  const fps = parseFloat(player.dataset.fps) || 10;
  const length = parseInt(player.dataset.length, 10) || 0;
  const times = new Map();  // video -> frame times (s)

  function frameAt(ts, t) {
    if (!ts || !ts.length) return Math.min(Math.max(Math.round(t * fps), 0), Math.max(length - 1, 0));
    let lo = 0, hi = ts.length - 1;
    if (t < ts[0]) return 0;
    while (lo < hi) {  // last i with ts[i] <= t
      const mid = (lo + hi + 1) >> 1;
      if (ts[mid] <= t + 1e-4) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  function show(i) {
    scrubber.value = String(i);
    label.textContent = String(i);
    document.querySelectorAll("svg.sync").forEach(function (svg) {
      const x0 = parseFloat(svg.dataset.x0), x1 = parseFloat(svg.dataset.x1);
      const left = parseFloat(svg.dataset.left), w = parseFloat(svg.dataset.plotw);
      const x = left + (i - x0) / (x1 - x0) * w;
      const line = svg.querySelector("line.cursor");
      if (line) { line.setAttribute("x1", x); line.setAttribute("x2", x); }
    });
  }

  function current() {
    const v = videos[0];
    return v ? frameAt(times.get(v), v.currentTime) : 0;
  }

  function timeOf(v, i) {  // a point inside frame i's display interval
    const ts = times.get(v);
    return ts && ts.length ? ts[Math.min(i, ts.length - 1)] + 0.4 / fps : (i + 0.4) / fps;
  }

  function seekFrame(i) {
    videos.forEach(function (v) { v.pause(); });
    show(i);
    return Promise.all(videos.map(function (v) {
      return new Promise(function (resolve) {
        v.addEventListener("seeked", function () { resolve(); }, { once: true });
        v.currentTime = timeOf(v, i);
      });
    }));
  }

  function tick() {
    const i = current();
    show(i);
    const lead = videos[0];
    videos.slice(1).forEach(function (v) {  // keep the others within a frame of the first
      if (Math.abs(frameAt(times.get(v), v.currentTime) - i) > 1) v.currentTime = timeOf(v, i);
    });
    if (lead && !lead.paused && !lead.ended) requestAnimationFrame(tick);
  }

  if (videos.length) {
    videos[0].addEventListener("play", function () { requestAnimationFrame(tick); });
    videos[0].addEventListener("timeupdate", function () { show(current()); });
    videos[0].addEventListener("seeked", function () { show(current()); });
  }
  document.getElementById("play").addEventListener("click", function () {
    videos.forEach(function (v) { v.play(); });
  });
  scrubber.addEventListener("input", function () { seekFrame(parseInt(scrubber.value, 10)); });

  Promise.all(videos.map(function (v) {
    return fetch(v.dataset.meta).then(function (r) { return r.json(); }).then(function (m) { times.set(v, m.times); });
  })).then(function () { document.body.dataset.ready = "1"; show(0); },
           function (e) { document.body.dataset.ready = "error"; console.error(e); });

  window.lakeview = { frameAt: frameAt, seekFrame: seekFrame, times: times, current: current };
})();
