"""GRPO with mutual-welfare rewards (the default GTAlign training run).

Presets (`--config=configs/grpo.py:NAME`):
  (none)        SFT warm start, then GRPO of SmolLM2-135M-Instruct on the built-in world, sized
                for a 2-core CPU (the README's first command).
  tiny          a random tiny model and a byte tokenizer: seconds, for tests.
  brief         a 24-step warm start of the real default model and no RL (about 3 minutes):
                a policy that writes the game's tags itself, for tests of what a trained
                policy uses (continuation across its own tokens, the server's game replies).
  gtalign_math  the GTAlign math-hard data (`--config.data.dir=.../gtalign`), Qwen2.5-3B-Instruct.
  tiny_lora     `tiny` with rank-8 adapters on every projection (tests).
  lora          the default world run with rank-16 adapters on every projection of every block
                instead of full weights of the top 8 blocks (learning rates in `_lora`).
  gtalign_math_lora  `gtalign_math` as QLoRA on one GPU: a 4-bit (NF4) frozen Qwen2.5-3B base,
                rank-64 adapters; its start-up memory plan fits a 24 GB card.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(
      name="smollm2-135m-instruct",  # known name, HF directory, .gguf file, or "tiny-random"
      dtype="bfloat16",  # compute dtype (matmuls accumulate in float32)
      param_dtype="float32",  # trained weights and optimizer moments stay float32
      remat=False,
      # low-rank adapters (gtalign.adapters): rank 0 = none, every weight trains as
      # rl.trainable says; rank > 0 = only the adapters train, on the projections named in
      # targets ("all", or a comma list of q, k, v, o, gate, up, down)
      lora=ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets="all")),
      base_quant="none",  # none | nf4 | int8: the frozen base's projections stored quantized
  ))
  c.data = ml_collections.ConfigDict(dict(
      source="world",  # "world" (built-in) or a GTAlign config: math-hard, wildguard, ...
      dir="",  # GTAlign data directory (sources other than "world")
      eval_split="test",
      prompt_style="compact",  # "full" (the paper's instruction) or "compact"
      num_train=256,  # world rows for RL
      num_warm=320,  # warm-start rows (world training facts, and entities and categories of
                     # data/warm_start.py's own); SFT cycles through them
      num_test=54,  # world held-out rows: distinct facts and vague phrasings, never trained on
      vague_fraction=0.5,
      test_fact_fraction=0.15,  # of each category's facts, held out
      max_prompt_length=512,  # tokens; longer prompts are dropped (with a logged count)
  ))
  c.sft = ml_collections.ConfigDict(dict(
      # 120 steps = 3 passes over the 320 warm-start rows, each drawing every row's strategies
      # anew (40 steps: the table decided nothing after the warm start, key = pick 0.5; 104
      # steps: the greedy policy no longer hedged with AQ at seeds 0 and 2, CQ on VQ 0.76 and
      # 0.79 before any RL, and seed 2's RL broke the format; README "The default run",
      # levers k0 and k2)
      steps=120, batch_size=8, lr=1e-3, warmup_steps=4,
      lr_schedule="cosine",  # constant | cosine (to zero at the last SFT step)
      # random: the strategy a trace's table selects is drawn independently of the question
      # type, so the warm start teaches the format, the reading of the question and of the
      # table, and RL has to learn which move pays (data/warm_start.py); oracle: DA on
      # definite and CQ on vague questions (hands over the answer)
      warm_start="random",
      # random only: row = one strategy per row at every pass of SFT; visit = drawn anew at
      # every pass, so no training question's move can be learned by heart
      # (data/warm_start.DRAWS)
      draw="visit",
      # random only: AQ's share of the drawn strategies; DA and CQ split the rest (above 0.5,
      # the greedy policy after the warm start hedges with AQ: data/warm_start.Draw)
      hedge=0.6,
      # random only: read = only the row of the question's type peaks; both = each row peaks on
      # a strategy of its own (the payoff of either reading). With both, the table is written
      # independently of the reading and RL moved one row of it at a time (seed 0: the DQ row
      # only, DA on DQ 0.89, CQ on VQ 0.00); with read, the peak follows the reading and RL
      # moved both (0.95, 0.59; README "The default run", levers c0 and r0); bumped = read,
      # with one cell of the other row raised a little in half the traces
      # (data/warm_start.BUMPS), so a provider's edit of both rows is not new to the scan:
      # steering after the warm start 0.78 -> 0.94 at seed 0, but RL then peaked the tables
      # on DA in both rows and never learned the vague row (lever b0)
      rows="read",
      # fixed: the chosen cell (4, 3), every other (1, 2), so a table's pick is where its peak
      # is; varied: numbers drawn per cell (greedy decoding of the draws writes their mode, a
      # flat table, and the scan compares equal sums); jittered: the chosen cell (4, 3), every
      # other a low cell drawn per pass, whole or half (data/warm_start.LOW_CELLS), so the
      # copied scan cannot find a cell by where it sits: seed 0's warm start followed 4 of 12
      # DA edits raising the other row's cell to (1.5, 2.5) and 9 of 12 raising it to (2, 3)
      # (lever j0: the scan then copied every edit, but the response no longer followed the
      # key, key = pick 0.86, and RL learned neither row); decimal: fixed, every number spelled
      # "4.0", so a provider's "1.5" is as long in tokens as the "1.0" it replaces (an edit
      # keeps the policy's spelling, steering.with_table). decimal at seed 0 (lever dec0):
      # steering after the warm start 0.78 -> 0.97, trained DA on DQ 0.84, CQ on VQ 0.94,
      # steering 0.94, every bar met; at seed 1 (dec1) the warm start steered 0.86 (whole
      # numbers: 0.58) but RL learned neither row (DA on DQ 0.00, CQ on VQ 0.50): not yet the
      # default
      tables="fixed",
      # the table's JSON leads with the chosen cell: the decision is one key's tokens, not a
      # peak placed cell by cell (warm_start.payoff_json)
      chosen_first=False,
      # how <analyze> restates each cell it compares (data/warm_start.SCANS): copy = as the
      # table writes it ("DQ_DA":{"LLM":4,"user":3}), restate = in the scan's own words
      # (DQ_DA: LLM 4, user 3); a copied cell repeats the table's tokens, so what RL teaches the
      # table to write there, the scan writes too, whatever an edit put in the table. restate
      # at seed 0 (README "The default run", lever rs0): RL no longer bent a scan, but the warm
      # start steered 0.69 (copy 0.78) and RL learned only the vague row (DA on DQ 0.00)
      scan="copy",
      response_weight=5.0,  # a <response> token's weight in the SFT loss's mean (1: plain): the
                            # few tokens that carry the key out, among ~270 templated ones
      # a fraction of the vague warm-start rows taught as two-turn dialogues (ask for the
      # detail, the user gives it, answer): multi-turn episodes need a policy that reads a
      # reply (data/warm_start.dialogue_turns); 0 = single-turn traces only
      dialogues=0.0,
      answer_tokens=40,  # the base model's plain answer a trace states: its first sentence
                         # within this many tokens (gtalign.training.distill)
  ))
  c.rl = ml_collections.ConfigDict(dict(
      algorithm="grpo",
      # assistant turns per episode (gtalign.dialogue): 1 = single-turn traces; K > 1 = the
      # simulated user answers each clarifying question, up to K turns, and U, L count the
      # whole dialogue (grpo only)
      max_turns=1,
      simulator="rule",  # rule (the world's rule-based user) | http://host:port/v1 (an LLM user)
      simulator_model="user",  # an HTTP simulator's model name and reply budget
      simulator_max_tokens=64,
      # the RL phase's own seed (its sampling and prompt order), on top of `seed`, which also
      # draws the world and the warm start: RL arms of one warm start differ only in this
      seed=0,
      # 6 steps of 4 prompts (2 definite, 2 vague) x 8 samples, 2 updates on each: groups
      # where the rarer move shows up, both types twice a step, and 12 updates. Measured from
      # the same warm starts (README "The default run", levers p0, p1 against t0, t1): 2 x 8 x
      # 12 steps learned the definite row at every seed and the vague row at none (CQ on VQ
      # 0.00, 0.00); this learned both at seed 0 (0.95, 0.82) and the vague one at seed 1
      steps=6,
      prompts_per_step=4,
      num_samples=8,  # G: completions per prompt
      # policy updates on each step's samples (TRL's num_iterations, verl's ppo_epochs): above
      # 1 the later ones see a ratio away from 1 and the clip bounds them; 1 = on-policy
      updates_per_batch=2,
      temperature=1.0,
      # > 0: the <payoff> block's tokens are drawn at this temperature instead (the loss
      # divides their logits by it too; training.batches.table_span): where the table peaks
      # is the move, decided by a few number tokens, and a warm start that hedges with AQ
      # samples the other peaks too rarely for RL to rank them (seed 1, decimal tables: 2
      # priced direct answers in 96 definite rollouts, welfare 0.70 against AQ's 0.42). A
      # whole-trace temperature of 1.5 broke the format (lever tt2)
      table_temperature=0.0,
      # with table_temperature: a hot token is drawn from this many likeliest only (0 = all);
      # at T = 2 over the whole vocabulary a table's numbers drew "V.0" and " pericardial"
      table_top_k=4,
      # with table_temperature, which numbers are hot: all (each number's first token, and each
      # cell's brace) or lead (each row's first LLM number, payoff.BEFORE_ROW_LEAD: one draw a
      # row, whether its first cell peaks; the rest of the row is written from that choice).
      # With all at T = 2 (nt1), 16 of 96 definite rollouts wrote DA on a table whose pick was
      # not DA (a tie or a second peak), paid as unpriced; with lead at T = 3 (ld1), a lead
      # drawn off its peak mostly moved the peak to the same move in the other row (9 of 18)
      # instead of changing the move
      table_numbers="all",
      top_p=1.0,
      max_new_tokens=352,  # a warm-start-shaped trace is 275 tokens on average, 316 at most
      # 7e-5 moved neither row of the table in 8 steps, 2e-4 moved the DQ row and broke the VQ
      # row's format, 1.2e-4 moved the VQ row in 8 steps (seed 0, README "The default run")
      lr=1.2e-4,
      lr_schedule="constant",  # constant | cosine (to zero at the last RL step)
      warmup_steps=0,
      weight_decay=0.01,
      grad_clip=1.0,
      advantage="grpo",  # grpo | drgrpo | rloo
      # Group std floored at 0.1: on the world, samples with different strategies differ in
      # welfare by 0.15-0.5 while the length and distinctness terms move it by ~0.01; plain GRPO
      # divides a group of same-strategy samples by that tiny std and turns noise into
      # advantages of +-1.7, Dr.GRPO (no division) leaves real differences at +-0.2.
      adv_std_floor=0.1,
      world_consistency=0.2,  # world only: weight of the key/table/response consistency in L
      world_misread=0.0,  # world only: the answer term's factor when the key's row (DQ_/VQ_)
                          # is not the question's type; 1 turns it off (rewards/world.py)
      world_unpriced=0.0,  # world only: its factor when the move is not the strict pick of the
                           # trace's own table (key and response); 1 turns it off
      # world only: its factor on an AQ, either type (rewards/world.py); 0.5 gave seed 2 direct
      # answers (0.00 -> 0.29) and cost seeds 0 and 1 steering (0.72 -> 0.44, 0.50; a0-a2)
      world_hedge=1.0,
      # > 0: this many groups a step of rl.num_samples continuations of one of the step's own
      # rollouts, its table edited after </payoff> to select a strategy drawn at random (the
      # steering metric's edit, eval.steering_edit), each paid 1 for doing the edited key in
      # <analyze> and <response>, else 0 (gtalign.training.steer_groups): RL's own samples
      # only show the response keys its own table picked. One group at seed 0 (lever st0): its
      # samples followed 0.875-1.0 of the edits, steering 0.72 -> 0.69, 30 s more a step;
      # three (st3): steering 0.72, the rows lost (CQ on VQ 0.82 -> 0.29), 75 s more a step
      steer_groups=0,
      # > 0: this many groups a step of rl.num_samples rows that keep one rollout's <thinking>
      # and price its table anew for DA, CQ and AQ in turn (the row it read; the steering
      # metric's "read" edit), each continued once from </payoff> and paid the run's own
      # reward; the read row's cells and the continuation train (gtalign.training.
      # priced_groups): RL can only rank tables its policy samples, and seed 2's warm start
      # sampled almost no DA on definite questions. Four a step: seed 2 DA on DQ 0.00 -> 0.71,
      # seed 1 0.69 -> 0.56, seed 0's format broke at the last step (README "The default
      # run", levers pr0-pr2, n0, c0)
      priced_groups=0,
      # which rows a priced group's table prices (evaluation.steering.EDITS): read, the row
      # its reading read (the other row as the policy wrote it); both, that row and the other
      # for the same strategy, as a provider's edit and the steering metric price them (the
      # default's steering misses are edits of the row it does not read)
      priced_edit="read",
      # what a priced row trains (training.priced_groups.TRAINS): all, its table's cells in
      # the row read and the scan and response that continue it; table, the cells only (the
      # continuation follows a table the host wrote; trained, it stopped copying the table
      # with 2 own prompts and 2 priced groups a step, README lever n0); numbers, the cells'
      # numbers only, where a group's rows differ (pr0's format broke at seed 0; prn0 kept
      # it, DA on DQ 0.84, and lost the vague row, CQ on VQ 0.00)
      priced_train="all",
      # whose rollouts a step prices (training.priced_groups.TYPES): both, definite and vague
      # prompts in turn; DQ or VQ, that type's only. Every priced arm with vague groups lost
      # the vague row the default's own rollouts learn (c0, prn0), while the row RL cannot
      # sample (seed 2's DA on definite questions) is a definite one. DQ with 2 groups a step
      # (numbers trained) at seed 0 (lever pd0): both rows learned (0.95, 0.88), steering 0.69;
      # at seed 2 (pd2) the definite row did not move (DA on DQ 0.00), steering 0.56
      priced_types="both",
      # > 0: this many of a step's rollouts, their tables edited as eval.steering_edit edits
      # (the steering metric's edit), taught the warm start's scan of the edited table by its
      # likelihood, in an update after each policy update (gtalign.training.scan_rows): the
      # default's steering misses are scans that write the cells the policy would have
      # written instead of the edited ones. Not the default: 16 rows at seed 0 (README "The
      # default run", lever sc0) steered 0.72 -> 0.83 with no scan miscopying an edit, but
      # RL's own tables lost their strict pick (0.66 -> 0.06 of a step's rollouts) and it
      # learned neither row; at seed 1 (sc1) it steered no better than the warm start (0.58)
      scan_rows=0,
      # the scan rows' loss is multiplied by this: it shares AdamW's moments with the policy
      # loss, so a smaller weight pulls the shared moments less (every update's step is about
      # the learning rate whatever the gradient's scale); 0.1 and 0.02 at seed 0 (sw0, sx0):
      # the tables lost their pick as with 1 (key = pick 0.61, 0.17), steering 0.75, 0.39
      scan_weight=1.0,
      welfare="cobb_douglas",  # cobb_douglas | linear | user_only | llm_only | nash | min
      welfare_alpha=0.5,  # cobb_douglas exponent on U
      normalisation="none",  # none | zscore | minmax | robustz | cdf | quantile | james | ...
      clip_low=0.2,
      clip_high=0.2,
      dual_clip=3.0,
      kl_coef=0.0,  # KL to the frozen starting policy, in the loss (0 = off, as the paper)
      kl_estimator="k3",
      kl_in_reward=False,  # True: subtract kl_coef * summed KL from each row's welfare instead
      # > 0 (with train_thinking=False): the <thinking> block, which gets no advantage, is held
      # to the starting policy by its KL (kl_estimator), each token weighing this much against
      # a trained token's loss: RL drifted the reading through the weights it shares (seed 1:
      # definite questions read as vague 0.19 -> 0.31 of the time); at 1.0, seed 1 read them
      # so 0.12 of the time and learned both rows (README "The default run", lever tk1; at
      # seed 0, tk0, the same bars as without it), but steered less (0.61 and 0.67), and at
      # seed 2 (tk2) RL broke the format from its fourth step. With sft.tables=decimal
      # (levers tkd0, tkd1, tkd2): seed 0 met every bar, seed 1 every bar but DA on DQ
      # (0.00); seed 2 learned neither row (DA on DQ 0.00, CQ on VQ 0.26, steering 0.69)
      thinking_kl=0.0,
      # > 0: the cells of the table's row that a sample's key does not read are held to the
      # starting policy by their KL (kl_estimator), each token weighing this much against a
      # trained token's loss; with train_other_row=False that KL is all that reaches them. RL
      # grew a second peak in that row through the weights it shares (README "The default
      # run", levers b0, o0b, a2), which the scan then copies
      other_row_kl=0.0,
      # group | absolute (with train_thinking=False): the <thinking> block trains too, on an
      # advantage of its own: whether it named the question's type (DQ or VQ; world rows),
      # relative within the group or +-0.5 (objective.GRADINGS), not the sample's welfare, so
      # the reading is graded by what it reads and the move stays the table's (with welfare's
      # advantage, lever h1, the reading learned the move: the response followed the
      # question's type over an edited key); off = the reading is not trained. Seed 1: group
      # read better and learned no row more (g1), absolute learned DA on DQ 0.88 and lost CQ on
      # VQ (1.00 -> 0.75, ab1)
      grade_reading="off",
      entropy_coef=0.0,
      # False: each sample's <thinking> (the question's reading) is left out of the loss, so RL
      # keeps the warm start's reading and trains the table, key and response (single-turn)
      train_thinking=False,
      # False: each sample's <analyze> (the scan of its own table, from </payoff> through
      # </analyze>) is left out of the loss too, so RL would train only the table and the
      # response. Measured at seed 0 (README "The default run", lever e0): the scan drifted
      # anyway through the weights it shares ("sums to 7 > 3, best so far VQ_AQ"), and the
      # response, trained without it, asked back whatever the key said (key = pick 0.44,
      # response does the key 0.08); trained, the scan stays the table's (0.97)
      train_analyze=True,
      # False: the cells of the table's row that the sample's key does not read are left out
      # of the loss (its welfare never depended on them; rollout.mask_other_row)
      train_other_row=True,
      loss_agg="token-mean",  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
      num_microbatches=2,  # 16 of the 32 rollouts at a time (11.6 GB peak on the 2-core CPU)
      # all | top_k_blocks:N (SFT uses it too); with adapters, whose blocks' adapters train
      trainable="top_k_blocks:8",
      judge="rule",  # rule | http://host:port/v1 (any OpenAI-compatible server, gtalign.serve too)
      judge_model="judge",  # an HTTP judge's model name, max_tokens and retries per request
      judge_max_tokens=4096,
      judge_max_retries=3,
      judge_timeout_s=60.0,  # per attempt; a hung judge connection is cut after this
      variant="main",  # reward variant: main | ablation
      on_judge_failure="mask",  # mask | zero
      parse_mode="strict",  # strict | lenient (paper-exact)
      critic_lr=2e-6,  # ppo only: the value model's learning rate
      gamma=1.0,  # ppo only: GAE discount and lambda
      lam=1.0,
      value_clip=0.5,  # ppo only: clipped value loss
  ))
  c.eval = ml_collections.ConfigDict(dict(
      every=0,  # steps between held-out evaluations during RL (0: only after SFT and the end)
      at_start=False,  # also evaluate the starting model (always when there is no warm start)
      num_prompts=36,
      chunk=18,  # prompts per generate call (a progress line after each)
      max_new_tokens=352,  # a warm-start-shaped trace is 275 tokens on average, 316 at most
      bootstrap=2000,
      # edit each held-out trace's table to select each strategy of its row in turn, continue,
      # and report the share followed (gtalign.evaluation.steering): 3 continuations a prompt
      steering=True,
      steering_prompts=12,  # the first N held-out prompts are steered (0: all of them)
      # both: an edit prices both rows (a provider's pricing change); read: only the row the
      # policy read, the other left as it wrote it (evaluation.steering.EDITS)
      steering_edit="both",
      base_plain=True,  # world: the base model asked each held-out question plainly (no game)
      phrasings=True,  # reading accuracy on questions written for the check (evaluation.reading)
      # > 0: also play each held-out question as a greedy dialogue of up to this many turns
      # with rl.simulator (gtalign.dialogue.evaluation), whatever rl.max_turns is
      dialogue_turns=0,
  ))
  # mesh axis sizes within a slice (ICI), and across slices or hosts (DCN); -1 = the rest
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1,
                                          dcn_data=1, dcn_fsdp=1, dcn_tensor=1))
  c.sampler_mesh = ""  # "data,fsdp,tensor" over each process's devices; "" = the trainer's
  # every: RL steps between saves; sft_every: warm-start steps between saves (and its last
  # step), each 20-30x cheaper than an RL step: saving every 4 of them cost the default run
  # about 55 s of its 120 SFT steps on 2 cores (bench/checkpoint_cost.py)
  # keep_warm_start: the warm start's last checkpoint is kept beside the newest max_to_keep,
  # so RL of other settings can start from it (copy it into a new workdir's checkpoints/)
  c.checkpoint = ml_collections.ConfigDict(dict(every=4, sft_every=20, max_to_keep=2,
                                                keep_warm_start=True))
  return c


def _lora(c: ml_collections.ConfigDict, rank: int, sft_lr: float, rl_lr: float,
          base_quant: str = "none") -> ml_collections.ConfigDict:
  """Adapters on every projection of every block; only they train (alpha = 2 rank)."""
  c.model.lora = ml_collections.ConfigDict(dict(rank=rank, alpha=2.0 * rank, targets="all"))
  c.model.base_quant = base_quant
  c.rl.trainable = "all"  # every adapter (with adapters on, only adapters ever train)
  c.sft.lr = sft_lr
  c.rl.lr = rl_lr
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config()
  if not arg:
    return c
  if arg == "tiny_lora":
    return _lora(get_config("tiny"), rank=8, sft_lr=1e-2, rl_lr=3e-4)
  if arg == "lora":
    # rates measured on this run at seed 0 (README: "Adapters"): SFT 2e-3 / 5e-3 / 1e-2 (20
    # steps: flat tables / tables with a peak / no format); RL 7e-4 (10x the full-weight rate,
    # as in "LoRA Without Regret", Schulman et al. 2025) collapsed onto one move in 8 steps,
    # 2e-4 did not
    c = _lora(c, rank=16, sft_lr=5e-3, rl_lr=2e-4)
    # the backward pass now runs through all 30 blocks, not the top 8: one RL update of 16
    # rollouts at once peaked above 24 GB here (OOM-killed); microbatches of 4 do not
    c.rl.num_microbatches = c.rl.prompts_per_step * c.rl.num_samples // 4
    return c
  if arg == "gtalign_math_lora":
    c = _lora(get_config("gtalign_math"), rank=64, sft_lr=1e-4, rl_lr=1e-5, base_quant="nf4")
    c.model.param_dtype = "bfloat16"  # the frozen embeddings and norms; adapters are float32
    # one 24 GB card: 32 rollouts of up to 4096 tokens a step (their KV cache is 4.5 GiB), and
    # one of them per microbatch (its window's logits are 1.2 GiB)
    c.rl.prompts_per_step = 4
    c.rl.num_microbatches = 32
    return c
  if arg == "tiny":
    c.model.name = "tiny-random"
    c.model.dtype = "float32"
    c.data.num_train = 64
    c.data.num_warm = 64
    c.data.num_test = 8
    c.sft.steps = 40  # enough for the random model to write tables (the steering test needs them)
    c.sft.batch_size = 4  # half the time of 8; 40 steps still teach the tables (30 do not)
    c.sft.lr = 3e-3
    c.sft.lr_schedule = "constant"
    c.sft.answer_tokens = 4  # a random model's "answers" are noise: short noise is learnable
    c.sft.response_weight = 1.0  # the format first: a random model must learn to write tables
    # one fixed strategy per row, one peaked row: what a random model learns in 40 steps
    c.sft.draw, c.sft.hedge, c.sft.rows = "row", 0.4, "read"
    c.rl.train_thinking = True  # a random model writes no </thinking> to leave out
    c.rl.steps = 4
    c.rl.prompts_per_step = 4  # 8 rows: splits over up to 8 devices
    c.rl.num_samples = 2
    c.rl.updates_per_batch = 1
    c.rl.num_microbatches = 1
    c.rl.temperature = 0.5
    c.rl.max_new_tokens = 256
    c.rl.lr = 3e-5
    c.rl.trainable = "all"
    c.eval.num_prompts = 8
    c.eval.chunk = 8
    c.eval.at_start = True
    c.eval.max_new_tokens = 256
    c.eval.bootstrap = 200
    c.eval.steering = False  # a random model writes no table to steer (on in test_training)
    c.checkpoint.every = 2
    c.checkpoint.sft_every = 2  # the kill tests resume inside the warm start too
    return c
  if arg == "brief":
    c.data.num_train = 64
    c.data.num_warm = 64
    c.data.num_test = 8
    c.sft.steps = 24  # 12 left it looping in <thinking> once the reading restated the detail
    c.sft.batch_size = 4
    c.sft.warmup_steps = 2
    # the traces the tests of a trained policy were written against (one peaked row)
    c.sft.draw, c.sft.hedge, c.sft.rows = "row", 0.4, "read"
    c.rl.steps = 0
    c.eval.num_prompts = 2
    c.eval.chunk = 2
    c.eval.bootstrap = 200
    c.eval.steering = False
    c.checkpoint.every = 24
    return c
  if arg == "gtalign_math":
    c.model.name = "qwen2.5-3b-instruct"
    c.model.remat = True
    c.data.source = "math-hard"
    c.data.prompt_style = "full"
    c.data.max_prompt_length = 2048
    c.sft.steps = 0
    c.rl.adv_std_floor = 0.0  # plain GRPO: the floor is sized for the world's reward gaps
    c.rl.steps = 180
    c.rl.updates_per_batch = 1  # verl's ppo_epochs default, as the paper's runs
    c.rl.prompts_per_step = 64
    c.rl.num_samples = 8
    c.rl.max_new_tokens = 2048
    c.rl.lr = 1e-6
    c.rl.trainable = "all"
    c.rl.num_microbatches = 16
    c.eval.every = 5
    c.eval.num_prompts = 353
    c.eval.max_new_tokens = 2048
    c.checkpoint.every = 10
    return c
  raise ValueError(f"unknown preset {arg!r} for configs/grpo.py; expected '', 'tiny', 'brief', "
                   "'gtalign_math', 'tiny_lora', 'lora' or 'gtalign_math_lora'")
