"""Students distilled from the zoo teacher: flow maps (LMD, MeanFlow, LSD), consistency (CD), LCM, Turbo-style.

- `objectives`: each training loss as a pure function of a batch (student, teacher, EMA target as callables).
- `sampling`: time grids, boundary-condition parameterisations, the flow-map and multistep consistency loops,
  and the explicit translations to diffusers' VP / VE conventions and to MeanFlow's time.
- `models`: how each family calls the teacher's U-Net; the Turbo-style discriminator.
- `train`: the recipes (`STUDENTS`, `BUDGETS`) and the driver `train_student(...)` / `zoo_train(...)`.
- `evaluate`: a quick FD-per-NFE look at trained students next to the teacher.
- `tiny`: a tiny random teacher for smoke tests.

Samplers (adapters) are in `bench.adapters.students`; docs in docs/students.md.
"""
