# %% [markdown]
# # Quick start: Init[A] vs Init[B] in one call
#
# Claim (Hayou, Ghosh, Yu 2024): with Adam, Init[A] (B = 0) is stable up to η = Θ(n^-1/2) and then shows
# *internal instability*, Z_A = A·Z = Θ(n^1/2); Init[B] (A = 0) is stable only up to η = Θ(n^-1), where
# B barely moves (B_t − B_0 = Θ(n^-1)). `lora_theory.simulate` trains both over widths in one call.

# %% tags=["parameters"]
quick = False

# %%
# %matplotlib inline
import lora_theory as lt
from lora_theory.analysis import window_rms
from lora_theory.fit import fit_exponents

widths = [64, 128, 256, 512] if quick else [128, 256, 512, 1024, 2048, 4096]
df = lt.simulate(widths=widths, inits=["A", "B"], lr_exponent=[-0.5, -1.0], seeds=[0, 1, 2], steps=6)
df.head()

# %% [markdown]
# Width exponents of the RMS of Z_A, Z_B and B_t − B_0 over steps 2..6 (theory: Init[A] at c = −1/2 gives
# +1/2, 0, −1/2; Init[B] at c = −1 gives 0, 0, −1).

# %%
stats = ["z_a_rms", "z_b_rms", "b_shift_rms"]
fit_exponents(window_rms(df, stats), stats, by=["init", "lr_exponent"]).round(3)

# %% [markdown]
# RMS(Z_A) against width at each step: it grows like n^1/2 under Init[A] (internal instability), not under Init[B].

# %%
from matplotlib.figure import Figure

from lora_theory import plotting

fig = Figure(figsize=(8, 3))
for ax, (init, c) in zip(fig.subplots(1, 2), [("A", -0.5), ("B", -1.0)]):
    sel = df[(df.init == init) & (df.lr_exponent == c) & (df.step >= 1)]
    plotting.plot_coord_check(sel, ax, "z_a_rms", 0.5 if init == "A" else 0.0, title=f"Init[{init}], c = {c}")
fig
