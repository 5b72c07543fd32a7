// The Uploads page: drop a file on the box, and upload it with a progress bar (one XHR, the file as
// the body, so the server streams it to disk).
const drop = document.querySelector(".kc-drop");
["dragover", "drop"].forEach((kind) => drop.addEventListener(kind, (event) => {
  event.preventDefault();
  if (kind === "drop") drop.querySelector("input").files = event.dataTransfer.files;
}));
document.getElementById("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target, file = form.file.files[0], bar = form.querySelector("progress"), error = form.querySelector("#upload-error");
  const fail = (text) => { error.textContent = text; error.hidden = false; bar.hidden = true; form.querySelector("button").disabled = false; };
  if (file.size > Number(form.dataset.max)) return fail(`${file.name} is larger than the ${form.dataset.maxLabel} upload limit. Split it into smaller files.`);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/uploads/?name=" + encodeURIComponent(file.name));
  xhr.setRequestHeader("x-csrftoken", JSON.parse(document.body.getAttribute("hx-headers"))["x-csrftoken"]);
  xhr.setRequestHeader("accept", "application/json");
  xhr.setRequestHeader("content-type", "application/octet-stream");
  xhr.upload.onprogress = (p) => { bar.max = p.total; bar.value = p.loaded; };
  xhr.onload = () => { let r = {}; try { r = JSON.parse(xhr.responseText); } catch (e) {}
    xhr.status === 201 ? (location.href = r.url) : fail(r.detail || `The upload failed (HTTP ${xhr.status}).`); };
  xhr.onerror = () => fail("The upload was interrupted (network error). Nothing was kept; try again.");
  error.hidden = true; bar.hidden = false; form.querySelector("button").disabled = true;
  xhr.send(file);
});
