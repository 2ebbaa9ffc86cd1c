// The Submit page: `ctl submit-job`'s options as a form (crates/ctl/src/
// job_spec.rs: the same names, the coordinator's defaults shown beside
// each), built into a JobSpec the way `build_job_spec` builds it, the
// equivalent `ctl` command kept up to date for copying, and the server's
// field violations shown next to the field they name.

import { ApiError, api, errorText } from "./api.js";
import { announce, h, randomId, replace } from "./dom.js";

const ENUM_PREFIX = {
  dataset: "DATASET_KIND_", model: "ARCH_", head: "HEAD_", normalize: "NORMALIZATION_", resize: "RESIZE_METHOD_",
  precision: "PRECISION_", device: "DEVICE_KIND_", collective: "COLLECTIVE_BACKEND_",
  register: "REGISTER_POLICY_", monitor: "MONITOR_METRIC_",
};

const synthetic = (v) => v.dataset === "synthetic";
const splits = (v) => ["pets", "pets-breeds", "folder"].includes(v.dataset);

/**
 * The form's fields: `key` is the ctl flag (and spec-file key), `paths`
 * the JobSpec fields (under SubmitJobRequest) whose violations belong to
 * it, `def` the default the coordinator applies when it is left empty.
 */
const GROUPS = [
  ["Data", [
    { key: "dataset", label: "Data set", kind: "select", options: ["synthetic", "cifar10", "pets", "pets-breeds", "folder"], value: "synthetic", required: true, paths: ["spec.dataset.kind", "spec.dataset"] },
    { key: "data-dir", label: "Data directory (on the workers)", kind: "text", def: "the worker's data dir + the kind's name", paths: ["spec.dataset.data_dir"] },
    { key: "download", label: "Download when missing", kind: "bool", show: (v) => !synthetic(v), paths: ["spec.dataset.download"] },
    { key: "valid-pct", label: "Validation fraction", kind: "float", def: "0.2", show: splits, paths: ["spec.dataset.valid_pct"] },
    { key: "split-seed", label: "Split seed", kind: "u64", def: "42", show: splits, paths: ["spec.dataset.split_seed"] },
    { key: "train-len", label: "Training samples", kind: "int", def: "2000", show: synthetic, paths: ["spec.dataset.synthetic.train_len"] },
    { key: "valid-len", label: "Validation samples", kind: "int", def: "500", show: synthetic, paths: ["spec.dataset.synthetic.valid_len"] },
    { key: "classes", label: "Classes (2–6)", kind: "int", def: "2", show: synthetic, paths: ["spec.dataset.synthetic.num_classes"] },
  ]],
  ["Model", [
    { key: "model", label: "Body", kind: "select", options: ["cnn", "resnet18", "resnet34"], value: "resnet18", required: true, paths: ["spec.arch"] },
    { key: "head", label: "Head", kind: "select", options: ["", "linear", "fastai", "cam"], value: "cam", def: "linear for the cnn, else required", paths: ["spec.head"] },
    { key: "pretrained", label: "Pretrained body", kind: "select", options: ["", "imagenet", "path"], optionLabels: { "": "none", path: "a file on the workers…" }, def: "none", paths: ["spec.pretrained"] },
    { key: "pretrained-path", label: "Weights path (.pth or .safetensors)", kind: "text", show: (v) => v.pretrained === "path", paths: ["spec.pretrained_path"], noFlag: true },
    { key: "normalize", label: "Normalisation", kind: "select", options: ["", "none", "imagenet"], def: "imagenet for a pretrained body, else none", paths: ["spec.normalization"] },
  ]],
  ["Training", [
    { key: "epochs", label: "Epochs", kind: "int", value: "1", required: true, paths: ["spec.epochs"] },
    { key: "fine-tune", label: "fine_tune (frozen, then unfrozen)", kind: "bool", paths: ["spec.fine_tune"] },
    { key: "freeze-epochs", label: "Frozen epochs", kind: "int", def: "1", show: (v) => v["fine-tune"], paths: ["spec.freeze_epochs"] },
    { key: "lr", label: "Learning rate", kind: "float", def: "1e-3 (fit_one_cycle), 2e-3 (fine_tune)", paths: ["spec.lr"] },
    { key: "weight-decay", label: "Weight decay", kind: "float", def: "0.01", paths: ["spec.weight_decay"] },
    { key: "batch-size", label: "Batch size per rank", kind: "int", def: "64", paths: ["spec.batch_size"] },
    { key: "image-size", label: "Image size (px)", kind: "int", def: "the data set's (32 CIFAR and the cnn, 224 pets/folder, 64 synthetic)", paths: ["spec.image_size", "spec.dataset.synthetic.image_size"] },
    { key: "resize", label: "Resize", kind: "select", options: ["", "crop", "squish", "pad"], def: "crop", paths: ["spec.resize"] },
    { key: "no-flip", label: "No random horizontal flips", kind: "bool", paths: ["spec.flip"] },
    { key: "seed", label: "Seed", kind: "u64", def: "random (recorded in the job)", paths: ["spec.seed"] },
    { key: "precision", label: "Precision", kind: "select", options: ["", "fp32", "bf16", "fp16"], def: "fp32", paths: ["spec.precision"] },
    { key: "channels-last", label: "Channels-last (NHWC)", kind: "bool", paths: ["spec.channels_last"] },
    { key: "profile-steps", label: "Profile steps (step-time breakdown, trace)", kind: "bool", paths: ["spec.profile_steps"] },
    { key: "no-cuda-graphs", label: "No CUDA graphs (every step eager)", kind: "bool", paths: ["spec.cuda_graphs"] },
    { key: "monitor", label: "Validation metric watched", kind: "select", options: ["", "valid_loss", "accuracy"], def: "valid_loss", paths: ["spec.monitor"] },
    { key: "early-stop", label: "Early stop after (epochs without improvement)", kind: "int", def: "0: train every epoch", paths: ["spec.early_stop_patience"] },
  ]],
  ["Group", [
    { key: "workers", label: "Workers", kind: "int", def: "1", paths: ["spec.workers"] },
    { key: "min-workers", label: "Fewest workers", kind: "int", def: "= workers", paths: ["spec.min_workers"] },
    { key: "gpus-per-worker", label: "GPUs per worker", kind: "int", def: "every GPU (one rank on a CPU worker)", paths: ["spec.gpus_per_worker"] },
    { key: "device", label: "Device", kind: "select", options: ["", "cpu", "cuda"], def: "CUDA when every worker has GPUs", paths: ["spec.device"] },
    { key: "collective", label: "All-reduce", kind: "select", options: ["", "nccl", "ring"], def: "NCCL on CUDA, else the TCP ring", paths: ["spec.collective"] },
    { key: "max-failures", label: "Restarts after failures", kind: "int", def: "3", paths: ["spec.max_failures"] },
    { key: "max-membership-changes", label: "Restarts for membership changes", kind: "int", def: "10", paths: ["spec.max_membership_changes"] },
    { key: "checkpoint-every", label: "Checkpoint every (epochs)", kind: "int", def: "1", paths: ["spec.checkpoint_every"] },
    { key: "keep-checkpoints", label: "Checkpoints kept", kind: "int", def: "2", paths: ["spec.keep_checkpoints"] },
  ]],
  ["Registry", [
    { key: "name", label: "Model name", kind: "text", def: "the data set's kind", paths: ["spec.name"] },
    { key: "alias", label: "Aliases besides latest (comma-separated)", kind: "list", paths: ["spec.aliases"] },
    { key: "register", label: "Register which epoch", kind: "select", options: ["", "last", "best"], optionLabels: { best: "best (by the watched metric)" }, def: "last", paths: ["spec.register"] },
    { key: "tag", label: "Tags (key=value, comma-separated)", kind: "list", paths: ["spec.tags"] },
    { key: "description", label: "Description", kind: "text", paths: ["spec.description"] },
  ]],
];

const FIELDS = GROUPS.flatMap(([, fields]) => fields);

/** `spec.dataset.validPct` → `spec.dataset.valid_pct`. */
function snake(path) {
  return path.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** The field a violation's path names (exactly, or the nearest enclosing one). */
export function fieldFor(path) {
  let p = snake(path || "");
  while (p) {
    const field = FIELDS.find((f) => f.paths.includes(p));
    if (field) return field;
    const cut = p.lastIndexOf(".");
    if (cut < 0) break;
    p = p.slice(0, cut);
  }
  return null;
}

/** Quotes a shell word when it needs quoting. */
function shellWord(s) {
  return /^[A-Za-z0-9_.,:@%+=/-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

/** A comma-separated list field's items. */
const items = (v) => (v ? v.split(",").map((s) => s.trim()).filter(Boolean) : []);

/** Reads the form: {values by key, errors by key} (only shown fields count). */
function readForm(form) {
  const values = {};
  const errors = {};
  for (const f of FIELDS) {
    const el = form.elements[f.key];
    values[f.key] = f.kind === "bool" ? el.checked : el.value.trim();
  }
  for (const f of FIELDS) {
    if (f.show && !f.show(values)) {
      values[f.key] = f.kind === "bool" ? false : "";
      continue;
    }
    const v = values[f.key];
    if (f.kind === "int" || f.kind === "u64") {
      if (v !== "" && !/^\d+$/.test(v)) errors[f.key] = "expected a whole number ≥ 0";
    } else if (f.kind === "float") {
      if (v !== "" && !(/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v) && Number.isFinite(Number(v)))) errors[f.key] = "expected a number, e.g. 3e-3";
    } else if (f.key === "tag") {
      const bad = items(v).find((t) => !/^[^=]+=/.test(t));
      if (bad) errors[f.key] = `expected key=value, not ${JSON.stringify(bad)}`;
    }
    if (f.required && v === "") errors[f.key] = `${f.label.toLowerCase()} is required`;
  }
  return { values, errors };
}

/** The JobSpec JSON of the form's values (as ctl's build_job_spec). */
export function buildSpec(values) {
  const e = (key) => (values[key] ? `${ENUM_PREFIX[key]}${values[key].toUpperCase().replaceAll("-", "_")}` : undefined);
  const int = (key) => (values[key] === "" ? undefined : Number(values[key]));
  const float = (key) => (values[key] === "" ? undefined : Number(values[key]));
  const u64 = (key) => (values[key] === "" ? undefined : values[key]);
  const dataset = {
    kind: e("dataset"),
    dataDir: values["data-dir"] || undefined,
    download: values.download || undefined,
    validPct: float("valid-pct"),
    splitSeed: u64("split-seed"),
  };
  if (values.dataset === "synthetic") {
    dataset.synthetic = { trainLen: int("train-len"), validLen: int("valid-len"), imageSize: int("image-size"), numClasses: int("classes") };
  }
  const pretrained = values.pretrained === "imagenet" ? "PRETRAINED_SOURCE_IMAGENET" : values.pretrained === "path" ? "PRETRAINED_SOURCE_PATH" : undefined;
  const spec = {
    name: values.name || undefined,
    dataset,
    arch: e("model"),
    head: e("head"),
    pretrained,
    pretrainedPath: values.pretrained === "path" ? values["pretrained-path"] : undefined,
    normalization: e("normalize"),
    epochs: int("epochs"),
    fineTune: values["fine-tune"] || undefined,
    freezeEpochs: int("freeze-epochs"),
    lr: float("lr"),
    batchSize: int("batch-size"),
    imageSize: int("image-size"),
    resize: e("resize"),
    flip: values["no-flip"] ? false : undefined,
    weightDecay: float("weight-decay"),
    seed: u64("seed"),
    workers: int("workers"),
    gpusPerWorker: int("gpus-per-worker"),
    device: e("device"),
    minWorkers: int("min-workers"),
    maxFailures: int("max-failures"),
    maxMembershipChanges: int("max-membership-changes"),
    checkpointEvery: int("checkpoint-every"),
    keepCheckpoints: int("keep-checkpoints"),
    precision: e("precision"),
    channelsLast: values["channels-last"] || undefined,
    collective: e("collective"),
    aliases: values.alias ? items(values.alias) : undefined,
    profileSteps: values["profile-steps"] || undefined,
    cudaGraphs: values["no-cuda-graphs"] ? false : undefined,
    register: e("register"),
    monitor: e("monitor"),
    earlyStopPatience: int("early-stop"),
    tags: values.tag ? Object.fromEntries(items(values.tag).map((t) => [t.slice(0, t.indexOf("=")), t.slice(t.indexOf("=") + 1)])) : undefined,
    description: values.description || undefined,
  };
  return JSON.parse(JSON.stringify(spec));
}

/** The `ctl submit-job` command of the form's values. */
export function ctlCommand(values) {
  const words = ["ctl"];
  const origin = location.protocol === "https:" ? `https://${location.host}` : location.host;
  if (origin && origin !== "127.0.0.1:50051") words.push("--coordinator", origin);
  words.push("submit-job");
  for (const f of FIELDS) {
    if (f.noFlag) continue;
    const v = values[f.key];
    if (f.kind === "bool") {
      if (v) words.push(`--${f.key}`);
    } else if (f.key === "pretrained") {
      if (v === "imagenet") words.push("--pretrained", "imagenet");
      else if (v === "path") words.push("--pretrained", shellWord(values["pretrained-path"] || "PATH"));
    } else if (f.kind === "list") {
      for (const a of items(v)) words.push(`--${f.key}`, shellWord(a));
    } else if (v !== "") {
      words.push(`--${f.key}`, shellWord(v));
    }
  }
  return words.join(" ");
}

function fieldControl(f) {
  const id = `f-${f.key}`;
  const hintId = `hint-${f.key}`;
  const errId = `err-${f.key}`;
  const described = [f.def ? hintId : null, errId].filter(Boolean).join(" ");
  let control;
  if (f.kind === "select") {
    control = h("select", { id, name: f.key, "aria-describedby": described, required: f.required || null },
      f.options.map((o) => h("option", { value: o, selected: o === (f.value ?? "") }, (f.optionLabels && f.optionLabels[o]) || (o === "" ? "default" : o))));
  } else if (f.kind === "bool") {
    control = h("input", { id, name: f.key, type: "checkbox", "aria-describedby": described });
  } else {
    const numeric = f.kind === "int" || f.kind === "u64" || f.kind === "float";
    control = h("input", {
      id, name: f.key, type: "text", value: f.value || "", "aria-describedby": described,
      inputmode: f.kind === "float" ? "decimal" : numeric ? "numeric" : null,
      placeholder: f.def && f.def.length <= 12 ? f.def : "", autocomplete: "off", spellcheck: "false", required: f.required || null,
    });
  }
  const label = h("label", { for: id }, f.label, f.required ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null);
  return h("div", { class: `field${f.kind === "bool" ? " check-field" : ""}`, dataset: { field: f.key } },
    f.kind === "bool" ? [control, label] : [label, control],
    h("span", { class: "flag", "aria-hidden": "true" }, f.noFlag ? "" : `--${f.key}`),
    f.def ? h("p", { class: "hint", id: hintId }, `Default: ${f.def}`) : null,
    h("p", { class: "field-error", id: errId, role: "alert", hidden: true }));
}

export async function render(main) {
  const summary = h("div", { id: "form-errors", class: "error-summary", role: "alert", hidden: true, tabindex: "-1" });
  const command = h("code", { id: "ctl-command" });
  const submitButton = h("button", { type: "submit", id: "submit-job" }, "Submit job");
  const form = h("form", { id: "submit-form", novalidate: true, "aria-describedby": "submit-intro" },
    summary,
    GROUPS.map(([name, fields]) => h("fieldset", { class: "group" }, h("legend", {}, name), fields.map(fieldControl))),
    h("div", { class: "actions" }, submitButton));
  const copy = h("button", {
    type: "button", class: "secondary", onclick: async () => {
      try {
        await navigator.clipboard.writeText(command.textContent);
        announce("Command copied.");
      } catch {
        getSelection().selectAllChildren(command);
        announce("Select-all done: press Ctrl+C to copy.");
      }
    },
  }, "Copy");
  main.append(
    h("h1", {}, "Submit a job"),
    h("p", { id: "submit-intro" }, "The options of ", h("code", {}, "ctl submit-job"), ". Empty fields take the coordinator's default, shown under each."),
    h("div", { class: "submit-layout" }, form,
      h("aside", { class: "command", "aria-labelledby": "cmd-h" }, h("h2", { id: "cmd-h" }, "The same with ctl"), h("pre", {}, command), copy)));

  let requestId = randomId();
  let lastModel = form.elements.model.value;

  function update() {
    // The cnn has a linear head only; the ResNets are most useful with CAM's.
    const model = form.elements.model.value;
    if (model !== lastModel) {
      const head = form.elements.head;
      if (model === "cnn" && head.value !== "linear") head.value = "";
      else if (lastModel === "cnn" && head.value === "") head.value = "cam";
      lastModel = model;
    }
    const { values } = readForm(form);
    for (const f of FIELDS) {
      const box = form.querySelector(`[data-field="${f.key}"]`);
      box.hidden = Boolean(f.show && !f.show(values));
    }
    command.textContent = ctlCommand(values);
  }

  function clearErrors() {
    summary.hidden = true;
    replace(summary);
    for (const el of form.querySelectorAll(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  function showErrors(byKey, unplaced) {
    let first = null;
    for (const [key, text] of Object.entries(byKey)) {
      const err = form.querySelector(`#err-${key}`);
      err.textContent = text;
      err.hidden = false;
      const control = form.elements[key];
      control.setAttribute("aria-invalid", "true");
      first = first || control;
    }
    if (unplaced.length) {
      replace(summary, h("p", {}, "The job was not submitted:"), h("ul", {}, unplaced.map((t) => h("li", {}, t))));
      summary.hidden = false;
      summary.focus();
    } else if (first) {
      first.focus();
    }
  }

  form.addEventListener("input", update);
  form.addEventListener("change", update);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const { values, errors } = readForm(form);
    if (Object.keys(errors).length) {
      showErrors(errors, []);
      return;
    }
    submitButton.disabled = true;
    try {
      const answer = await api("v1/jobs", { method: "POST", body: { spec: buildSpec(values), requestId } });
      requestId = randomId();
      announce(`Submitted ${answer.job.id}.`);
      location.hash = `#/jobs/${encodeURIComponent(answer.job.id)}`;
    } catch (e) {
      if (e instanceof ApiError && e.httpStatus >= 400 && e.httpStatus < 500) requestId = randomId();
      const byKey = {};
      const unplaced = [];
      const violations = e instanceof ApiError ? e.fieldViolations : [];
      for (const v of violations) {
        const f = fieldFor(v.field);
        if (f && !form.querySelector(`[data-field="${f.key}"]`).hidden) byKey[f.key] = v.description;
        else unplaced.push(`${v.field}: ${v.description}`);
      }
      if (!violations.length) unplaced.push(errorText(e));
      showErrors(byKey, unplaced);
    } finally {
      submitButton.disabled = false;
    }
  });
  update();
}
