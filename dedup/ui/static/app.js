// Pictures of reported content stay blurred and grey until an analyst clicks them (the
// wellness default of trust & safety tools); a second click hides them again.
document.addEventListener("click", (event) => {
  const target = event.target.closest(".sensitive");
  if (!target) return;
  event.preventDefault();
  target.classList.toggle("revealed");
});
document.addEventListener("keydown", (event) => {
  const target = event.target.closest && event.target.closest(".sensitive");
  if (target && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    target.classList.toggle("revealed");
  }
});
for (const el of document.querySelectorAll(".sensitive")) {
  el.tabIndex = 0;
  el.setAttribute("role", "button");
}
