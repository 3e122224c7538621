/* The verbs of cmsctl. Each takes its own argv (argv[0] is the verb's name,
 * e.g. "gen"), parses its own options and returns the process exit status
 * (see cli.h). */
#ifndef CMSCTL_VERBS_H
#define CMSCTL_VERBS_H

int cmsctl_gen_main(int argc, char **argv);
int cmsctl_record_main(int argc, char **argv);
int cmsctl_replay_main(int argc, char **argv);
int cmsctl_audit_main(int argc, char **argv);        /* argv[0] is "audit", argv[1] the sub-verb */
int cmsctl_audit_verify_main(int argc, char **argv); /* audit_verify.c */
/* contract_offline.c: an Ed25519 key file (common/edkey.h), for contracts
 * and for cms-audit's checkpoints alike */
int cmsctl_keygen_main(int argc, char **argv, const char *prog, const char *summary);
/* argv[0] is "identity" / "credential", argv[1] the sub-verb (identity.c) */
int cmsctl_identity_main(int argc, char **argv);
int cmsctl_credential_main(int argc, char **argv);
int cmsctl_whoami_main(int argc, char **argv);  /* identity.c: who the API key belongs to */
int cmsctl_version_main(int argc, char **argv); /* main.c */
/* argv[0] is "contract", argv[1] "keygen" or "verify": the contract verbs
 * that need no server (contract_offline.c) */
int cmsctl_contract_offline_main(int argc, char **argv);
/* argv[0] is "contract", argv[1] the sub-verb (contract.c: the commands of cms-contracts) */
int cmsctl_contract_main(int argc, char **argv);
/* argv[0] is "job", argv[1] the sub-verb (job.c: the commands of cms-training) */
int cmsctl_job_main(int argc, char **argv);
/* argv[0] is "budget": cmsctl contract budget, the contract's privacy ledger
 * that cms-training keeps (job.c) */
int cmsctl_contract_budget_main(int argc, char **argv);
/* argv[0] is "privacy", argv[1] "epsilon", "sigma" or "steps": DP-SGD accounting,
 * offline (privacy.c) */
int cmsctl_privacy_main(int argc, char **argv);

#endif
