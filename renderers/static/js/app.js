/* MetaCRM UI behaviour. Loaded as a file because the Content-Security-Policy
   forbids inline scripts; styles are set through the CSSOM, which the policy
   allows, never through style attributes. */
(function () {
  "use strict";

  var HEX_COLOR = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/;

  function expandHex(color) {
    if (color.length === 4) {
      return "#" + color[1] + color[1] + color[2] + color[2] + color[3] + color[3];
    }
    return color;
  }

  // Black or white, whichever reads better on the background (WCAG luminance).
  function textColorFor(background) {
    var hex = expandHex(background);
    var channels = [1, 3, 5].map(function (start) {
      var value = parseInt(hex.substr(start, 2), 16) / 255;
      return value <= 0.03928 ? value / 12.92 : Math.pow((value + 0.055) / 1.055, 2.4);
    });
    var luminance = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2];
    return luminance > 0.4 ? "#111827" : "#ffffff";
  }

  function colourBadges(root) {
    root.querySelectorAll("[data-color]").forEach(function (badge) {
      var color = badge.getAttribute("data-color") || "";
      if (!HEX_COLOR.test(color)) {
        return;
      }
      badge.style.backgroundColor = color;
      badge.style.borderColor = color;
      badge.style.color = textColorFor(color);
    });
  }

  function submitOnChange(root) {
    root.querySelectorAll("[data-autosubmit]").forEach(function (input) {
      input.addEventListener("change", function () {
        var form = input.form;
        if (!form) {
          return;
        }
        if (typeof form.requestSubmit === "function") {
          form.requestSubmit();
        } else {
          form.submit();
        }
      });
    });
  }

  function clickableRows(root) {
    root.querySelectorAll("tr[data-href]").forEach(function (row) {
      row.addEventListener("click", function (event) {
        if (event.target.closest("a, button, input, select, textarea, label")) {
          return;
        }
        if (window.getSelection && String(window.getSelection()).length > 0) {
          return;
        }
        window.location.assign(row.getAttribute("data-href"));
      });
    });
  }

  // Block a second submit while the first is on its way. Buttons are enabled
  // again when the browser shows the page from its back-forward cache.
  function submitOnce(root) {
    root.querySelectorAll("form[method='post']").forEach(function (form) {
      form.addEventListener("submit", function () {
        form.querySelectorAll("button[type='submit']").forEach(function (button) {
          window.setTimeout(function () { button.disabled = true; }, 0);
        });
      });
    });
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) {
        return;
      }
      root.querySelectorAll("button[type='submit']").forEach(function (button) {
        button.disabled = false;
      });
    });
  }

  // A dependent picklist offers only the options that the value of its
  // controlling picklist allows, and is cleared when its value stops fitting.
  function dependentPicklists(root) {
    root.querySelectorAll("select[data-depends-on]").forEach(function (select) {
      var form = select.form;
      var controlling = form && form.elements.namedItem(select.getAttribute("data-depends-on"));
      var allowedBy;
      try {
        allowedBy = JSON.parse(select.getAttribute("data-dependent-options") || "{}");
      } catch (error) {
        return;
      }
      if (!controlling || !controlling.tagName || controlling.tagName !== "SELECT") {
        return;
      }
      function update() {
        var allowed = allowedBy[controlling.value] || [];
        Array.prototype.forEach.call(select.options, function (option) {
          var fits = option.value === "" || allowed.indexOf(option.value) !== -1;
          option.hidden = !fits;
          option.disabled = !fits;
        });
        if (select.value !== "" && allowed.indexOf(select.value) === -1) {
          select.value = "";
        }
      }
      controlling.addEventListener("change", update);
      update();
    });
  }

  // Shows or hides the column of a field with visible_when. A hidden input
  // loses its "required" attribute, because the browser would otherwise
  // block the submit over an input the user cannot see. The server still
  // checks "required".
  function setFieldShown(box, shown) {
    box.hidden = !shown;
    box.querySelectorAll("input, select, textarea").forEach(function (input) {
      if (!shown && input.required) {
        input.required = false;
        input.setAttribute("data-required-when-shown", "");
      } else if (shown && input.hasAttribute("data-required-when-shown")) {
        input.required = true;
        input.removeAttribute("data-required-when-shown");
      }
    });
  }

  // A form section whose fields are all hidden is hidden too.
  function hideEmptySections(form) {
    form.querySelectorAll("section.card").forEach(function (section) {
      var columns = section.querySelectorAll(".card-body > .row > div");
      var shown = Array.prototype.some.call(columns, function (column) {
        return !column.hidden;
      });
      section.hidden = columns.length > 0 && !shown;
    });
  }

  // Fields with visible_when: shortly after the user types, the form posts
  // its inputs to the server, which returns {field: visible}. Only the reply
  // to the latest request is applied. A failed request changes nothing.
  function fieldVisibility(root) {
    root.querySelectorAll("form[data-visibility-url]").forEach(function (form) {
      var url = form.getAttribute("data-visibility-url");
      var tokenInput = form.querySelector("input[name='csrf_token']");
      var timer = null;
      var latest = 0;

      function apply(shown) {
        form.querySelectorAll("[data-visibility-field]").forEach(function (box) {
          var name = box.getAttribute("data-visibility-field");
          if (Object.prototype.hasOwnProperty.call(shown, name)) {
            setFieldShown(box, shown[name] === true);
          }
        });
        hideEmptySections(form);
      }

      function evaluate() {
        var inputs = {};
        // Every input is sent, an unchecked check box as an empty list.
        Array.prototype.forEach.call(form.elements, function (element) {
          if (element.name && element.name.indexOf("f_") === 0) {
            inputs[element.name] = [];
          }
        });
        new FormData(form).forEach(function (value, name) {
          if (name.indexOf("f_") !== 0 || typeof value !== "string") {
            return;
          }
          inputs[name].push(value);
        });
        latest += 1;
        var request = latest;
        window.fetch(url, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            "X-CSRFToken": tokenInput ? tokenInput.value : ""
          },
          body: JSON.stringify(inputs)
        }).then(function (response) {
          return response.ok ? response.json() : null;
        }).then(function (shown) {
          if (shown && request === latest) {
            apply(shown);
          }
        }).catch(function () {});
      }

      function schedule() {
        window.clearTimeout(timer);
        timer = window.setTimeout(evaluate, 250);
      }

      form.addEventListener("input", schedule);
      form.addEventListener("change", schedule);
      form.querySelectorAll("[data-visibility-field]").forEach(function (box) {
        setFieldShown(box, !box.hidden);
      });
      hideEmptySections(form);
      // The page may show values other than the stored ones, after a failed
      // save or a prefilled link, so evaluate them once.
      evaluate();
    });
  }

  function start() {
    fieldVisibility(document);
    dependentPicklists(document);
    colourBadges(document);
    submitOnChange(document);
    clickableRows(document);
    submitOnce(document);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
