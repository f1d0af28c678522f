"""dd3g-sdk distillation: the teacher interface, the procedural object world, quadruples and PEPD training."""
