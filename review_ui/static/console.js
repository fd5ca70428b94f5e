// Hallmark reviewer console: SLA/lease countdowns and click-to-reveal images. No inline scripts (CSP).
"use strict";

function human(seconds) {
  const s = Math.floor(Math.abs(seconds));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60, r = s % 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + r + "s";
  return r + "s";
}

function tick() {
  const now = Date.now() / 1000;
  for (const el of document.querySelectorAll(".timer[data-deadline]")) {
    const left = parseFloat(el.dataset.deadline) - now;
    if (Number.isNaN(left)) continue;
    el.textContent = left >= 0 ? "in " + human(left) : "overdue " + human(left);
    el.classList.toggle("overdue", left < 0);
  }
}

function reveal(img) {
  if (!img || !img.classList.contains("blurred")) return;
  img.src = img.dataset.full;  // the full image is fetched only now, and the server audits the reveal
  img.classList.remove("blurred");
  img.classList.add("revealed");
  img.alt = img.alt.replace(" (hidden until revealed)", "");
  const button = document.querySelector('button.reveal[data-target="' + img.id + '"]');
  if (button) button.hidden = true;
}

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  for (const img of document.querySelectorAll("img.review-image")) {
    img.addEventListener("click", () => reveal(img));
  }
  for (const button of document.querySelectorAll("button.reveal")) {
    button.addEventListener("click", () => reveal(document.getElementById(button.dataset.target)));
  }
});
