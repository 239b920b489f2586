"""The trust stage's checks, one module each: completeness, convergence, diagnostics, deletion,
randomization, and the lab's readings as claims (claims); rules holds the three head rules they
measure, figures the stage's two figures. A new check goes in a module of its own here, called from
stages/trust.py."""
