# Pipeline driver (issue 5): job files, manifest, stages, resume, Slurm.
tq_add_test(test_jobspec SOURCES test_jobspec.c LABELS cpu)
tq_add_test(test_manifest SOURCES test_manifest.c LABELS cpu)
tq_add_script_test(pipe_resume SCRIPT pipe_resume.sh LABELS mpi slow TIMEOUT 600)
tq_add_script_test(pipe_faults SCRIPT pipe_faults.sh LABELS mpi slow TIMEOUT 600)
tq_add_script_test(pipe_slurm SCRIPT pipe_slurm.sh LABELS mpi slow TIMEOUT 600)
tq_add_script_test(pipe_batch SCRIPT pipe_batch.sh LABELS mpi slow TIMEOUT 600)
tq_add_test(test_ckpt_table SOURCES test_ckpt_table.c LABELS cpu)
