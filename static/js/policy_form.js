// The policy form's VM picker (templates/policies/_field.html): the search box, hidden without
// JavaScript (the whole list is there to scroll), hides the VMs whose name and cluster do not contain
// what is typed. Chosen VMs always show, so a search never hides what will be saved.
document.addEventListener("DOMContentLoaded", () => {
  const box = document.querySelector("[data-vm-search]");
  const list = document.getElementById("vm-choices");
  if (!box || !list) {
    return;
  }
  const input = box.querySelector("input");
  const count = box.querySelector(".vm-count");
  const choices = Array.from(list.querySelectorAll(".vm-choice"));
  const update = () => {
    const wanted = input.value.trim().toLowerCase();
    let shown = 0;
    let chosen = 0;
    for (const choice of choices) {
      const checked = choice.querySelector("input").checked;
      const show = !wanted || checked || choice.textContent.toLowerCase().includes(wanted);
      choice.hidden = !show;
      shown += show ? 1 : 0;
      chosen += checked ? 1 : 0;
    }
    count.textContent = `${chosen} chosen; ${shown} of ${choices.length} shown`;
  };
  box.hidden = false;
  input.addEventListener("input", update);
  // Enter in the search box finds; it does not save the policy half-chosen.
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
    }
  });
  list.addEventListener("change", update);
  update();
});
