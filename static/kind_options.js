// Shows only the options that apply to the chosen mapping's kind: elements carry data-kinds
// ("profile subscription"), the mapping <option>s carry data-kind. Hidden options are disabled,
// so a catalog run never posts a backfill or list choice it cannot use.
function applyKindOptions(form) {
  const select = form.querySelector("select[name=mapping_id]");
  if (!select) return;
  const chosen = select.selectedOptions[0];
  const kind = chosen ? chosen.dataset.kind || "" : "";
  for (const el of form.querySelectorAll("[data-kinds]")) {
    const off = kind !== "" && !el.dataset.kinds.split(" ").includes(kind);
    el.hidden = off;
    for (const input of el.querySelectorAll("input, select, textarea")) input.disabled = off;
  }
}

function bindKindOptions(root) {
  for (const form of root.querySelectorAll("form[data-kind-options]")) {
    if (form.dataset.kindBound) continue;
    form.dataset.kindBound = "1";
    form.addEventListener("change", (event) => {
      if (event.target.name === "mapping_id") applyKindOptions(form);
    });
    applyKindOptions(form);
  }
}

document.addEventListener("DOMContentLoaded", () => bindKindOptions(document));
document.addEventListener("htmx:afterSwap", (event) => bindKindOptions(event.target.ownerDocument || document));
