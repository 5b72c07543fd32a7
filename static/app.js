// Behaviour templates ask for with data- attributes: the Content-Security-Policy allows no inline
// scripts or event handler attributes.
document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  const ask = target && target.closest("[data-confirm]");
  if (ask && !window.confirm(ask.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  const field = target && target.closest("[data-select-on-click]");
  if (field) field.select();
});
// A form that added a row (e.g. a new user) empties itself once the server accepted it.
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form instanceof HTMLFormElement && form.hasAttribute("data-reset-on-success") && event.detail.successful) {
    form.reset();
  }
});
