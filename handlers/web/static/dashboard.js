// ActiveDataFlow dashboard: drag-and-drop upload of WASM modules.
// Without JavaScript the upload form still works through its file input.
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (!form) {
    return;
  }
  var zone = document.getElementById("dropzone");
  var input = document.getElementById("module-file");
  var idField = document.getElementById("module-id");
  var zoneText = document.getElementById("dropzone-text");
  var status = document.getElementById("upload-status");
  var problems = document.getElementById("upload-problems");
  var button = document.getElementById("upload-button");
  var chosen = null;

  function formatSize(n) {
    if (n < 1024) {
      return n + " bytes";
    }
    if (n < 1024 * 1024) {
      return (n / 1024).toFixed(1) + " KiB";
    }
    return (n / (1024 * 1024)).toFixed(1) + " MiB";
  }

  function suggestId(name) {
    return name.replace(/\.(wasm|wat)$/i, "").toLowerCase().replace(/[^a-z0-9_.-]+/g, "-").replace(/^[-._]+|[-._]+$/g, "");
  }

  function choose(file) {
    chosen = file;
    zoneText.textContent = file.name + " (" + formatSize(file.size) + ")";
    zone.classList.add("has-file");
    if (!idField.value) {
      idField.value = suggestId(file.name);
    }
  }

  function showProblems(items) {
    problems.textContent = "";
    if (!items.length) {
      return;
    }
    var box = document.createElement("div");
    box.className = "problems";
    box.setAttribute("role", "alert");
    var title = document.createElement("strong");
    title.textContent = "Not uploaded: " + items.length + (items.length === 1 ? " problem" : " problems");
    var list = document.createElement("ul");
    items.forEach(function (text) {
      var li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
    });
    box.appendChild(title);
    box.appendChild(list);
    problems.appendChild(box);
  }

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      zone.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      zone.classList.remove("over");
    });
  });
  zone.addEventListener("drop", function (event) {
    var files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) {
      return;
    }
    choose(files[0]);
    try {
      input.files = files; // keeps the file input in step where the browser allows it
    } catch (ignored) {
      // the dropped file is sent from `chosen` instead
    }
  });
  input.addEventListener("change", function () {
    if (input.files.length) {
      choose(input.files[0]);
    }
  });
  // A file dropped next to the zone must not make the browser navigate away to it.
  window.addEventListener("dragover", function (event) {
    event.preventDefault();
  });
  window.addEventListener("drop", function (event) {
    event.preventDefault();
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var data = new FormData(form);
    var file = chosen || (input.files.length ? input.files[0] : null);
    if (file) {
      data.set("module", file, file.name);
    }
    // The CSRF token travels in the form data (the hidden field) and in the header.
    var token = data.get("csrf_token") || "";
    status.textContent = "Uploading…";
    button.disabled = true;
    fetch(form.action, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", "X-CSRF-Token": token },
    })
      .then(function (resp) {
        return resp.json().catch(function () {
          return {};
        }).then(function (body) {
          if (resp.ok && body.redirect) {
            window.location.assign(body.redirect);
            return;
          }
          if (resp.status === 401) {
            window.location.reload();
            return;
          }
          showProblems(body.problems || [body.error || "upload failed (HTTP " + resp.status + ")"]);
        });
      })
      .catch(function (err) {
        showProblems(["upload failed: " + err]);
      })
      .finally(function () {
        button.disabled = false;
        status.textContent = "";
      });
  });
})();

// A run's page while the run goes on: poll its progress and show the counts so far; once the
// run has ended, reload the page (its outcome, error and dead letters). Without JavaScript the
// page refreshes itself through a <noscript> meta refresh instead.
(function () {
  "use strict";

  var section = document.getElementById("run-progress");
  if (!section || !window.fetch) {
    return;
  }
  var url = section.getAttribute("data-progress-url");
  var every = 1500;

  function show(progress) {
    var text = progress.text || {};
    Object.keys(text).forEach(function (name) {
      section.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
        el.textContent = text[name];
      });
    });
    section.setAttribute("data-status", progress.status);
    section.setAttribute("data-records-in", progress.records_in === null ? "" : String(progress.records_in));
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch", Accept: "application/json" } })
      .then(function (resp) {
        if (resp.status === 401) {
          window.location.reload(); // the session ended: the login page
          return null;
        }
        return resp.ok ? resp.json() : null;
      })
      .then(function (progress) {
        if (progress === null) {
          window.setTimeout(poll, every * 2);
          return;
        }
        show(progress);
        if (progress.active) {
          window.setTimeout(poll, every);
        } else {
          window.location.reload();
        }
      })
      .catch(function () {
        window.setTimeout(poll, every * 2); // the server is away for a moment: try again
      });
  }

  window.setTimeout(poll, every);
})();
