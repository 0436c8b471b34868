// Behaviour the pages would otherwise write inline, which the Content-Security-Policy forbids.

// <form data-confirm="question">: ask before submitting.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// c26-api: <button data-copy="ID">: copy the value of input #ID (a new API token's key). Where the
// clipboard is not offered (plain HTTP off localhost, or refused) the key is selected instead, to
// copy by hand; the input is readonly, selectable without the button too.
document.addEventListener("click", (event) => {
  const button = event.target.closest && event.target.closest("button[data-copy]");
  if (!button) {
    return;
  }
  const field = document.getElementById(button.dataset.copy);
  const state = button.parentElement.querySelector(".copy-state");
  const say = (text) => {
    if (state) {
      state.textContent = text;
    }
  };
  field.focus();
  field.select();
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(
      () => say("Copied."),
      () => say("Selected: press Ctrl+C to copy."),
    );
  } else {
    say("Selected: press Ctrl+C to copy.");
  }
});

// A readonly key field selects its whole value when focused, so one click and Ctrl+C copy it.
document.addEventListener("focusin", (event) => {
  if (event.target.matches && event.target.matches("input.key[readonly]")) {
    event.target.select();
  }
});

// The menu on a narrow screen: folded behind its button, which opens and closes it (Escape closes
// it too). Without this script the button stays hidden and the menu wraps under the brand.
document.addEventListener("DOMContentLoaded", () => {
  const header = document.querySelector("header.top");
  const toggle = header && header.querySelector(".menu-toggle");
  if (!toggle) {
    return;
  }
  header.classList.add("foldable");
  toggle.hidden = false;
  const show = (open) => {
    header.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.addEventListener("click", () => show(!header.classList.contains("open")));
  header.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && header.classList.contains("open")) {
      show(false);
      toggle.focus();
    }
  });
});

// A box that scrolls sideways (.scroll around a wide table, <pre>) and holds nothing focusable
// takes the focus itself, so the keyboard can scroll it too.
function focusableScrollers() {
  for (const box of document.querySelectorAll(".scroll, pre")) {
    const scrolls = box.scrollWidth > box.clientWidth;
    if (scrolls && !box.querySelector("a[href], button, input, select, textarea, [tabindex]")) {
      box.tabIndex = 0;
    }
  }
}
document.addEventListener("DOMContentLoaded", focusableScrollers);
window.addEventListener("resize", focusableScrollers);
document.addEventListener("htmx:afterSettle", focusableScrollers);
