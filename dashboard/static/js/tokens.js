// The tokens page: copy buttons and the revoke confirmation (a static file: the
// Content-Security-Policy allows the site's own scripts only, no inline script or handler).
(function () {
  "use strict";
  document.querySelectorAll("button.copy").forEach(b => b.addEventListener("click", async () => {
    const source = document.querySelector(b.dataset.copy);
    try { await navigator.clipboard.writeText(source.textContent); b.textContent = "Copied"; }
    catch (e) {
      const r = document.createRange(); r.selectNodeContents(source);
      getSelection().removeAllRanges(); getSelection().addRange(r); b.textContent = "Selected: ⌘/Ctrl-C";
    }
    setTimeout(() => { b.textContent = "Copy"; }, 2000);
  }));
  document.querySelectorAll("form[data-confirm]").forEach(f => f.addEventListener("submit", ev => {
    if (!confirm(f.dataset.confirm)) ev.preventDefault();
  }));
})();
