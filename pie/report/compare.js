(function () {
  "use strict";
  // compare.html: the class view's candidate select, and the gallery of changed examples (filters and pages).
  const gallery = window.pieGallery;  // report.js, which runs first
  const el = gallery.el, option = gallery.option, countBy = gallery.countBy;
  function pct(x) { return (x === null || x === undefined) ? "" : " · " + Math.round(100 * x) + "%"; }

  // The class and group views' candidate selects.
  [["cls-candidate", "#classes"], ["grp-candidate", "#groups"]].forEach(function (view) {
    const select = document.getElementById(view[0]);
    if (!select) return;
    select.addEventListener("change", function () {
      document.querySelectorAll(view[1] + " .cand-block").forEach(function (block) {
        block.hidden = block.dataset.candidate !== select.value;
      });
    });
  });

  const dataEl = document.getElementById("flip-data");
  if (!dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const candSel = document.getElementById("flip-candidate");
  const classSel = document.getElementById("flip-class");
  const dirSel = document.getElementById("flip-direction");
  const directionLabel = {};
  data.directions.forEach(function (d) { directionLabel[d[0]] = d[1]; });

  const perCandidate = countBy(data.flips, "c");
  candSel.appendChild(option("all", "All candidates (" + data.flips.length + ")"));
  data.candidates.forEach(function (name, i) {
    candSel.appendChild(option(String(i), name + " (" + (perCandidate[i] || 0) + ")"));
  });
  candSel.value = data.candidates.length ? "0" : "all";

  function ofCandidate() {
    const c = candSel.value;
    return data.flips.filter(function (f) { return c === "all" || String(f.c) === c; });
  }
  function ofClass(items) {
    const y = classSel.value;
    return items.filter(function (f) { return y === "all" || String(f.y) === y; });
  }
  function selected() {
    const d = dirSel.value;
    return ofClass(ofCandidate()).filter(function (f) { return d === "all" || f.d === d; });
  }
  // The class and direction lists count what the filters before them leave, and keep a choice that matches nothing.
  function fillClasses(keep) { gallery.fillClasses(classSel, ofCandidate(), data.class_names, keep); }
  function fillDirections(keep) {
    const items = ofClass(ofCandidate());
    const counts = countBy(items, "d");
    dirSel.textContent = "";
    dirSel.appendChild(option("all", "All directions (" + items.length + ")"));
    data.directions.forEach(function (d) {
      dirSel.appendChild(option(d[0], d[1] + " (" + (counts[d[0]] || 0) + ")"));
    });
    dirSel.value = keep;
  }
  function labelRow(name, cls, value, prob, correct) {
    const row = el("div", "row");
    row.appendChild(el("span", "k", name));
    row.appendChild(el("span", "v " + cls + (correct === undefined ? "" : (correct ? " right" : " wrong")),
                       value + pct(prob)));
    return row;
  }
  function card(f) {
    const c = el("div", "card");
    c.dataset.candidate = String(f.c);
    c.dataset.exampleId = f.id;
    c.dataset.label = f.y;
    c.dataset.direction = f.d;
    const pic = el("div", "pic");
    const image = data.images[String(f.id)];
    if (image) {
      const img = el("img", Math.max(image.w, image.h) < data.tile_px ? "px" : "");
      img.src = image.img;
      img.alt = "example " + f.id + ", true label " + data.class_names[f.y];
      pic.appendChild(img);
    } else {
      pic.appendChild(el("span", "noimg", data.has_images ? "image not embedded" : "no image"));
    }
    c.appendChild(pic);
    const head = el("div", "head");
    head.appendChild(el("span", null, f.h === undefined ? "#" + f.id : f.h));
    head.appendChild(el("span", null, data.candidates[f.c]));
    c.appendChild(head);
    c.appendChild(labelRow("true", "lab-true", data.class_names[f.y]));
    // Right and wrong as the comparison counted them (a metric's verdict for examples scored by correctness).
    const refRight = f.rc === undefined ? f.r === f.y : f.rc, candRight = f.kc === undefined ? f.k === f.y : f.kc;
    c.appendChild(labelRow("reference", "lab-reference", data.class_names[f.r], f.rp, refRight));
    c.appendChild(labelRow("candidate", "lab-candidate", data.class_names[f.k], f.kp, candRight));
    c.appendChild(el("div", "dir " + f.d, directionLabel[f.d]));
    return c;
  }
  const pages = gallery.pager(
    { grid: "flip-grid", status: "flip-status", page: "flip-page", prev: "flip-prev", next: "flip-next" },
    data.page_size, selected, card, ["changed examples", "No changed example matches these filters"]);
  candSel.addEventListener("change", function () {
    fillClasses(classSel.value || "all"); fillDirections(dirSel.value || "all"); pages.first();
  });
  classSel.addEventListener("change", function () { fillDirections(dirSel.value || "all"); pages.first(); });
  dirSel.addEventListener("change", pages.first);
  fillClasses("all");
  fillDirections("all");
  pages.render();
})();
