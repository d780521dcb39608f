% rebase('base', title=title)
<section class="error-card">
  <h1>{{title}}</h1>
  <p>{{message}}</p>
  <p><a href="/">Back to the gallery</a></p>
</section>
