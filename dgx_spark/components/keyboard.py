"""Page-wide keyboard help, as one idempotent script the page installs when it mounts.

- Table rows (``tr[data-op-row]``, ``components/operations_table.py``): Arrow Up / Down, Home
  and End move focus between rows; Enter opens the focused row's logs (its Logs button).
- Dialogs: the page opens its dialogs from state (controlled Radix dialogs with no trigger),
  and Radix then leaves focus on ``<body>`` when one closes. The script remembers the last
  focused element outside any dialog and gives focus back to it when the last dialog closes.

It runs in the browser only (``rx.call_script``); nothing reaches the backend.
"""

from __future__ import annotations

import reflex as rx

KEYBOARD_SCRIPT = """
(() => {
  if (window.__dgxKeyboard) return;
  window.__dgxKeyboard = true;
  const ROW = 'tr[data-op-row]';
  const DIALOG = '[role="dialog"],[role="alertdialog"]';
  document.addEventListener('keydown', (e) => {
    const row = e.target;
    if (!(row instanceof HTMLElement) || !row.matches(ROW) || e.altKey || e.ctrlKey || e.metaKey) return;
    const rows = Array.from(document.querySelectorAll(ROW));
    const i = rows.indexOf(row);
    let next = null;
    if (e.key === 'ArrowDown') next = rows[i + 1];
    else if (e.key === 'ArrowUp') next = rows[i - 1];
    else if (e.key === 'Home') next = rows[0];
    else if (e.key === 'End') next = rows[rows.length - 1];
    else if (e.key === 'Enter') {
      const logs = row.querySelector('[data-action="logs"]');
      if (logs) { e.preventDefault(); logs.click(); }
      return;
    } else return;
    e.preventDefault();
    if (next) next.focus();
  });
  // The last focused element outside any dialog; when the last dialog goes away (dialogs portal
  // into <body>) and focus was left on <body>, it goes back there.
  let before = null;
  let hadDialog = false;
  document.addEventListener('focusin', (e) => {
    const t = e.target;
    if (t instanceof HTMLElement && !t.closest(DIALOG)) before = t;
  }, true);
  new MutationObserver(() => {
    const open = !!document.querySelector(DIALOG);
    if (hadDialog && !open) {
      const target = before;
      setTimeout(() => {
        const active = document.activeElement;
        if (target && target.isConnected && (!active || active === document.body) && !document.querySelector(DIALOG)) {
          target.focus({ preventScroll: true });
        }
      }, 0);
    }
    hadDialog = open;
  }).observe(document.body, { childList: true });
})();
"""


def install_keyboard() -> rx.event.EventSpec:
    """The event that installs ``KEYBOARD_SCRIPT`` (safe to fire any number of times)."""
    return rx.call_script(KEYBOARD_SCRIPT)
