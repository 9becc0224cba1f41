// The femoral-neck box on the upload form: the service renders the image and proposes the box
// (/api/v1/locate); the user may drag it (move) or its corner (resize). Only a box the user touched
// is sent (the field "box", in image pixels); untouched, the server uses the localiser's boxes.
(function () {
  "use strict";
  var input = document.getElementById("image");
  var cropped = document.getElementById("cropped");
  var stage = document.getElementById("stage");
  var img = document.getElementById("preview");
  var box = document.getElementById("box");
  var handle = document.getElementById("handle");
  var field = document.getElementById("box-field");
  var sideField = document.getElementById("side-field");
  var status = document.getElementById("locate-status");
  // signed in by cookie, the API wants the form's CSRF token in a header (osteo_service/auth/guards.py)
  var csrf = document.querySelector("#screen-form input[name=csrf_token]");
  if (!input || !stage) { return; }
  var state = null; // {cols, rows, box: [x0, y0, x1, y1] in image pixels}

  function perPixel() { return img.clientWidth / state.cols; } // displayed pixels per image pixel

  function draw() {
    var k = perPixel(), b = state.box;
    box.style.left = (b[0] * k) + "px";
    box.style.top = (b[1] * k) + "px";
    box.style.width = ((b[2] - b[0]) * k) + "px";
    box.style.height = ((b[3] - b[1]) * k) + "px";
  }

  function commit() {
    var b = state.box.map(function (v) { return Math.round(v); });
    field.value = b.join(",");
    box.classList.add("moved");
  }

  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

  function drag(ev, resize) {
    ev.preventDefault();
    ev.stopPropagation();
    var k = perPixel(), x0 = ev.clientX, y0 = ev.clientY, start = state.box.slice();
    var target = ev.currentTarget;
    target.setPointerCapture(ev.pointerId);
    function move(e) {
      var dx = (e.clientX - x0) / k, dy = (e.clientY - y0) / k, b = start.slice();
      if (resize) {
        b[2] = clamp(start[2] + dx, start[0] + 8, state.cols);
        b[3] = clamp(start[3] + dy, start[1] + 8, state.rows);
      } else {
        var w = start[2] - start[0], h = start[3] - start[1];
        b[0] = clamp(start[0] + dx, 0, state.cols - w);
        b[1] = clamp(start[1] + dy, 0, state.rows - h);
        b[2] = b[0] + w;
        b[3] = b[1] + h;
      }
      state.box = b;
      draw();
    }
    function up() {
      target.removeEventListener("pointermove", move);
      target.removeEventListener("pointerup", up);
      commit();
    }
    target.addEventListener("pointermove", move);
    target.addEventListener("pointerup", up);
  }

  box.addEventListener("pointerdown", function (e) { drag(e, false); });
  handle.addEventListener("pointerdown", function (e) { drag(e, true); });
  window.addEventListener("resize", function () { if (state) { draw(); } });

  function locate() {
    field.value = "";
    box.classList.remove("moved");
    if (!input.files.length || cropped.checked) { stage.hidden = true; status.textContent = ""; return; }
    var body = new FormData();
    body.append("image", input.files[0]);
    status.textContent = stage.dataset.locating;
    var headers = csrf ? {"X-CSRF-Token": csrf.value} : {};
    fetch("/api/v1/locate", {method: "POST", body: body, headers: headers, credentials: "same-origin"}).then(function (r) {
      return r.json().then(function (j) { return {ok: r.ok, json: j}; });
    }).then(function (res) {
      if (!res.ok) { status.textContent = res.json.detail; stage.hidden = true; return; }
      var j = res.json;
      var best = j.boxes.slice().sort(function (a, b) { return b.confidence - a.confidence; })[0];
      var b = best ? best.box : [j.cols * 0.35, j.rows * 0.35, j.cols * 0.65, j.rows * 0.65];
      state = {cols: j.cols, rows: j.rows, box: b.slice()};
      if (best && sideField) { sideField.value = best.side; }
      status.textContent = best && best.confident
        ? stage.dataset.located.replace("{conf}", best.confidence.toFixed(2)) : stage.dataset.notLocated;
      img.onload = function () { stage.hidden = false; draw(); };
      img.src = "data:image/png;base64," + j.preview_png;
      if (!(best && best.confident)) { commit(); } // the user must place it: send what is shown
    }).catch(function () { status.textContent = stage.dataset.notLocated; });
  }

  input.addEventListener("change", locate);
  cropped.addEventListener("change", locate);
}());
