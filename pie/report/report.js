// What the galleries of report.html and compare.html share (compare.html runs this script before compare.js).
window.pieGallery = (function () {
  "use strict";
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function option(value, text) { const o = el("option", null, text); o.value = value; return o; }
  function countBy(items, key) {
    const counts = {};
    items.forEach(function (item) { counts[item[key]] = (counts[item[key]] || 0) + 1; });
    return counts;
  }
  // The class select: "All classes (n)", then each class with items, most first; a kept choice that matches nothing
  // stays, with (0).
  function fillClasses(select, items, classNames, keep) {
    const counts = countBy(items, "y");
    select.textContent = "";
    select.appendChild(option("all", "All classes (" + items.length + ")"));
    Object.keys(counts).map(Number).sort(function (a, b) { return counts[b] - counts[a] || a - b; })
      .forEach(function (y) { select.appendChild(option(String(y), classNames[y] + " (" + counts[y] + ")")); });
    if (keep !== "all" && !(keep in counts)) select.appendChild(option(keep, classNames[Number(keep)] + " (0)"));
    select.value = keep;
  }
  // Pages of cards: `selected()` gives the items, `card(item)` draws one; ids name the grid, page line, status and
  // buttons; `what` is [plural noun, text when nothing matches].
  function pager(ids, pageSize, selected, card, what) {
    const grid = document.getElementById(ids.grid);
    const status = document.getElementById(ids.status);
    const pageInfo = document.getElementById(ids.page);
    const prev = document.getElementById(ids.prev);
    const next = document.getElementById(ids.next);
    let page = 0;
    function render() {
      const items = selected();
      const pages = Math.max(1, Math.ceil(items.length / pageSize));
      page = Math.min(Math.max(page, 0), pages - 1);
      const start = page * pageSize;
      const shown = items.slice(start, start + pageSize);
      grid.textContent = "";
      const frag = document.createDocumentFragment();
      shown.forEach(function (item) { frag.appendChild(card(item)); });
      grid.appendChild(frag);
      pageInfo.textContent = "Page " + (page + 1) + " of " + pages;
      status.textContent = items.length ? ("Showing " + (start + 1) + "–" + (start + shown.length) + " of " +
                                           items.length + " " + what[0]) : what[1];
      prev.disabled = page === 0;
      next.disabled = page >= pages - 1;
    }
    prev.addEventListener("click", function () { page -= 1; render(); });
    next.addEventListener("click", function () { page += 1; render(); });
    return { render: render, first: function () { page = 0; render(); } };
  }
  return { el: el, option: option, countBy: countBy, fillClasses: fillClasses, pager: pager };
})();

(function () {
  "use strict";
  const el = window.pieGallery.el, option = window.pieGallery.option;
  function pct(x) { return (x === null || x === undefined) ? "–" : Math.round(100 * x) + "%"; }

  // Sortable tables: click a header to sort by that column (numbers numerically), again to reverse.
  document.querySelectorAll("table.sortable").forEach(function (table) {
    const heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      function sort() {
        const asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          const fx = Number(x), fy = Number(y);
          let c;
          if (x === "" || y === "") c = (x === "") - (y === "");
          else if (!isNaN(fx) && !isNaN(fy)) c = fx - fy;
          else c = x.localeCompare(y);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  });
  document.querySelectorAll("input.table-filter").forEach(function (input) {
    input.addEventListener("input", function () {
      const q = input.value.trim().toLowerCase();
      const table = document.getElementById(input.dataset.table);
      // data-columns (e.g. "0,1,2"): match the query in any of those cells; else the class name, or the exact id.
      const columns = input.dataset.columns ? input.dataset.columns.split(",").map(Number) : null;
      Array.from(table.tBodies[0].rows).forEach(function (r) {
        if (columns) {
          r.hidden = q !== "" && !columns.some(function (c) {
            return r.cells[c].textContent.toLowerCase().indexOf(q) >= 0;
          });
          return;
        }
        r.hidden = q !== "" && r.cells[1].textContent.toLowerCase().indexOf(q) < 0 &&
                   r.cells[0].textContent !== q;
      });
    });
  });

  // PIE gallery.
  const dataEl = document.getElementById("pie-data");
  if (!dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const levelSel = document.getElementById("gal-level");
  const classSel = document.getElementById("gal-class");
  const levelLabel = {};

  levelSel.appendChild(option("all", "All levels (" + data.pies.length + ")"));
  data.levels.forEach(function (l) {
    levelLabel[l.key] = l.label;
    levelSel.appendChild(option(l.key, l.label + " sparsity (" + l.count + ")"));
  });
  if (data.levels.length) levelSel.value = data.levels[data.levels.length - 1].key;

  function inLevel() {
    const lv = levelSel.value;
    return data.pies.filter(function (p) { return lv === "all" || p.level === lv; });
  }
  function fillClasses(keep) { window.pieGallery.fillClasses(classSel, inLevel(), data.class_names, keep); }
  function selected() {
    const cl = classSel.value;
    return inLevel().filter(function (p) { return cl === "all" || String(p.y) === cl; });
  }
  function labelRow(name, cls, value, share, correct) {
    const row = el("div", "row");
    row.appendChild(el("span", "k", name));
    const v = el("span", "v " + cls + (correct === undefined ? "" : (correct ? " right" : " wrong")),
                 value + (share === undefined ? "" : " · " + pct(share)));
    row.appendChild(v);
    return row;
  }
  function card(p) {
    const c = el("div", "card");
    c.dataset.exampleId = p.id;
    c.dataset.level = p.level;
    c.dataset.label = p.y;
    const pic = el("div", "pic");
    if (p.img) {
      const img = el("img", Math.max(p.w, p.h) < data.tile_px ? "px" : "");
      img.src = p.img;
      img.alt = "example " + p.id + ", true label " + p.yn;
      pic.appendChild(img);
    } else {
      pic.appendChild(el("span", "noimg", data.has_images ? "image not embedded" : "no image"));
    }
    c.appendChild(pic);
    const head = el("div", "head");
    head.appendChild(el("span", null, "#" + p.id));
    head.appendChild(el("span", null, levelLabel[p.level]));
    c.appendChild(head);
    c.appendChild(labelRow("true", "lab-true", p.yn));
    c.appendChild(labelRow("dense", "lab-dense", p.dn, p.ds, p.d === p.y));
    c.appendChild(labelRow("pruned", "lab-pruned", p.pn, p.ps, p.p === p.y));
    if (p.tie || p.st !== undefined) {
      const extra = el("div", "row");
      extra.appendChild(el("span", "tie", p.tie ? "modal tie" : ""));
      if (p.st !== undefined) extra.appendChild(el("span", "k", "stability " + pct(p.st)));
      c.appendChild(extra);
    }
    return c;
  }
  const pages = window.pieGallery.pager(
    { grid: "gal-grid", status: "gal-status", page: "gal-page", prev: "gal-prev", next: "gal-next" },
    data.page_size, selected, card, ["PIEs", "No PIEs match these filters"]);
  levelSel.addEventListener("change", function () { fillClasses(classSel.value || "all"); pages.first(); });
  // Class names in the findings open the gallery on that class's PIEs.
  document.querySelectorAll("a.to-gallery").forEach(function (a) {
    a.addEventListener("click", function () {
      levelSel.value = a.dataset.level;
      fillClasses(a.dataset.class);
      pages.first();
    });
  });
  classSel.addEventListener("change", pages.first);
  fillClasses("all");
  pages.render();
})();
